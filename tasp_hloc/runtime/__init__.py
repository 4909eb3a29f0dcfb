"""Process settings: the device, the CPU allocator and torch.distributed set-up."""
