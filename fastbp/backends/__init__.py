"""Where the steps run: the CPU epochs, the CUDA device, several processes."""
