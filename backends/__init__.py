"""Fixed per-backend glue for the training scripts: device, sync, memory, array I/O, eval adapter."""
