"""The ``fastbp bench`` harness: ``harness`` plans and times the rounds,
``runners`` is the script each framework's process runs, ``command`` is the
command line's front. Kept out of ``import fastbp``: only the command line
and ``bench/`` use it."""
