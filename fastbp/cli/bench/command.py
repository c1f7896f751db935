"""The ``fastbp bench`` command: time training steps of fastbp and its peers
(see ``harness``), print the table and write the JSON and the chart; with
``--inference``, time predictions instead (see ``inference``)."""
import json
import os
import sys

from kernels import isa as kernels_isa
from fastbp.cli.bench import harness, inference
from fastbp.cli.commands import require_device
from fastbp.cli.safety import check_output


def bench_configs(args):
    if args.sweep:
        return harness.sweep_configs()
    if args.sizes:
        return [harness.Config("custom", args.sizes, args.batch[0] if args.batch else 64)]
    return [harness.CONFIGS[name] for name in args.configs or harness.CONFIGS]


def chosen_isa(choice):
    """--isa as a FASTBP_ISA value (None for auto), or False after one line
    on stderr when this CPU cannot run it."""
    isa = None if choice == "auto" else choice
    runnable = kernels_isa.supported(kernels_isa.host_features())
    if isa is not None and isa not in ("none", *runnable):
        print(f"fastbp: error: --isa {isa}: this CPU cannot run it (it runs: {', '.join(runnable) or 'no tiles'}, "
              "none)", file=sys.stderr)
        return False
    return isa


def print_cpu(isa):
    print(f"CPU: {harness.cpu_description()}" + {
        None: "", "none": "; fastbp forced to its no-tile path (FASTBP_ISA=none): products through BLAS",
        "avx2": "; forced to AVX2 (FASTBP_ISA=avx2, Numba without AVX-512, and the peers' AVX2 settings)",
        "avx512": "; FASTBP_ISA=avx512"}.get(isa, ""))


def print_ceiling(ceiling, threads):
    if ceiling:
        print(f"sgemm ceiling: {ceiling['gflops']:.1f} GFLOP/s, {threads} threads (the faster of SciPy's BLAS, "
              f"{ceiling['blas_gflops']:.1f}, and fastbp's own gemm, {ceiling['fastbp_gflops']:.1f})")


def show_progress(message):
    print(f"  {message}", end="\r", flush=True)


def bench(args, parser):
    """The ``fastbp bench`` command; returns the exit status."""
    # the defaults that differ between the two modes
    args.rounds = args.rounds or (5 if args.inference else 3)
    args.json = args.json or ("fastbp-bench-inference.json" if args.inference else "fastbp-bench.json")
    if args.inference:
        return bench_inference(args, parser)
    refused = require_device(args.device)
    if refused:
        return refused
    check_output("--json", args.json, overwrite=args.overwrite)
    check_output("--png", args.png, {"--json": args.json}, overwrite=args.overwrite)
    if args.batch and not args.sizes:
        parser.error("--batch sets the batch of a custom config: give --sizes too (e.g. --sizes 784,128,10)")
    if args.batch and len(args.batch) > 1:
        parser.error("--batch takes one batch size, or several with --inference")
    configs, threads = bench_configs(args), args.threads or os.cpu_count() or 1
    itemsize = 8 if args.dtype == "float64" else 4
    for config in configs:
        try:
            harness.check_fits_in_memory(config, itemsize)
        except MemoryError as error:
            print(f"fastbp: error: {error}", file=sys.stderr)
            return 2
    on_gpu = args.device == "cuda"
    peers = harness.peers(args.torch_compile, args.device)
    if "torch" not in peers:
        print("note: torch is not installed, so it is not timed (pip install 'fastbp[torch]')")
    if on_gpu:
        print("note: on the GPU, torch runs eager with TF32 matmuls off (torch) and on (torch tf32); "
              "JAX is not timed there")
    elif "jax" not in peers:
        print("note: JAX is not installed, so it is not timed (pip install 'fastbp[bench]')")
    isa = chosen_isa(args.isa)
    if isa is False:
        return 2
    print_cpu(isa)
    if isa == "avx2" and "jax" in peers:
        print("note: XLA's own code is held to AVX2, but its matrix products go through XNNPACK, which picks "
              "its kernels from the CPU itself: JAX may run faster here than on an AVX2 machine")
    # the CPU's sgemm rate is no ceiling for a GPU
    ceiling = None if on_gpu else harness.sgemm_ceiling(threads, isa)
    print_ceiling(ceiling, threads)
    progress = None if args.quiet else show_progress
    optimizers = ["sgd"] if args.sweep else args.optimizer or harness.OPTIMIZERS
    rows = []
    for config in configs:
        for optimizer in optimizers:
            try:
                rows.append(harness.measure(config, optimizer, ["fastbp"] + peers, rounds=args.rounds,
                                              threads=threads, activation=args.activation, dtype=args.dtype,
                                              ceiling_gflops=ceiling and ceiling["gflops"], progress=progress,
                                              device=args.device, isa=isa, dropout=args.dropout,
                                              norm=args.norm, residual=args.residual))
            except harness.Refused as refusal:
                print(f"\nfastbp: error: --device {args.device}: {refusal}", file=sys.stderr)
                return 2
            if not args.quiet:
                print(f"\033[K{harness.format_table(rows[-1:]).splitlines()[-1]}", flush=True)
    layers = ((", residual blocks" if args.residual else "") + (", layer norm" if args.norm else "")
              + (f", dropout {args.dropout:g}" if args.dropout else ""))
    print(f"\n{args.activation}{layers}, {args.dtype}, cross-entropy, on the {'GPU' if on_gpu else 'CPU'}; each framework "
          f"in its own process, {args.rounds} interleaved rounds; times per step in us, median [min-max] of the "
          "rounds' medians")
    print(f"threads: {threads} for every framework; the pools each process reported:")
    print(harness.thread_settings(rows, ceiling))
    print("vector code each process reported:")
    print(harness.vector_settings(rows, ceiling))
    print()
    print(harness.format_table(rows))
    if args.sweep:
        print(f"\nbest peer's step time / fastbp's, SGD\n{harness.format_sweep(rows)}")
    result = {"ceiling": ceiling, "threads": threads, "rounds": args.rounds, "rows": rows,
              "cpu": harness.cpu_description(), "isa": args.isa}
    if args.startup:
        result["startup"] = harness.measure_startup(isa)
        print(f"\nstartup to first step: cold cache {result['startup']['cold_s']:.2f} s, "
              f"warm cache {result['startup']['warm_s']:.2f} s")
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"\nwrote {args.json}")
    if harness.plot(rows, args.png):
        print(f"wrote {args.png}")
    else:
        print(f"skipped {args.png}: matplotlib is not installed (pip install 'fastbp[plot]')")
    return 0


# flag -> argument: what only the training bench uses
_TRAINING_ONLY = {"--configs": "configs", "--sweep": "sweep", "--optimizer": "optimizer",
                  "--torch-compile": "torch_compile", "--startup": "startup", "--dropout": "dropout", "--norm": "norm",
                  "--residual": "residual"}


def bench_inference(args, parser):
    """``fastbp bench --inference``; returns the exit status."""
    given = [flag for flag, name in _TRAINING_ONLY.items() if getattr(args, name)]
    given += ["--device cuda"] if args.device != "cpu" else []
    given += [f"--activation {args.activation}"] if args.activation != "relu" else []
    if given:
        parser.error(f"{', '.join(given)}: not used with --inference, which times ReLU networks on the CPU")
    check_output("--json", args.json, overwrite=args.overwrite)
    configs, batches = [args.sizes] if args.sizes else inference.CONFIGS, args.batch or inference.BATCHES
    threads, itemsize = args.threads or 2, 8 if args.dtype == "float64" else 4
    for sizes in configs:
        try:
            inference.check_fits_in_memory(sizes, max(batches), itemsize)
        except MemoryError as error:
            print(f"fastbp: error: {error}", file=sys.stderr)
            return 2
    peers = inference.peers()
    if "onnxruntime" not in peers:
        print("note: ONNX Runtime is not installed, so it is not timed (pip install 'fastbp[onnx]')")
    if "torch" not in peers:
        print("note: torch is not installed, so it is not timed (pip install 'fastbp[torch]')")
    isa = chosen_isa(args.isa)
    if isa is False:
        return 2
    print_cpu(isa)
    if isa == "avx2" and "onnxruntime" in peers:
        print("note: ONNX Runtime's MLAS picks its kernels from the CPU itself, and no setting holds it to AVX2: "
              "it may run faster here than on an AVX2 machine")
    ceiling = harness.sgemm_ceiling(threads, isa)
    print_ceiling(ceiling, threads)
    rows = []
    for sizes in configs:
        for batch in batches:
            rows.append(inference.measure(sizes, batch, ["fastbp"] + peers, rounds=args.rounds, threads=threads,
                                          dtype=args.dtype, ceiling_gflops=ceiling["gflops"],
                                          progress=None if args.quiet else show_progress, isa=isa))
            if not args.quiet:
                print("\033[K" + "\n".join(inference.format_table(rows[-1:]).splitlines()[2:]), flush=True)
    print(f"\nReLU hidden, identity output, {args.dtype}, on the CPU; each framework in its own process, "
          f"{args.rounds} interleaved rounds; times per call in us (fastbp model.predict(x), onnxruntime "
          "session.run, torch model(x) under inference_mode), median [min-max] of the rounds")
    print(f"threads: {threads} for every framework; the pools each process reported:")
    print(harness.thread_settings(rows, ceiling))
    print("vector code each process reported:")
    print(harness.vector_settings(rows, ceiling))
    print()
    print(inference.format_table(rows))
    result = {"ceiling": ceiling, "mode": "inference", "threads": threads, "rounds": args.rounds,
              "dtype": args.dtype, "rows": rows, "cpu": harness.cpu_description(), "isa": args.isa}
    with open(args.json, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"\nwrote {args.json}")
    return 0
