"""What runs only inside a worker process: the worker, its telemetry callback, the providers
(Hugging Face, Unsloth), the strategies (TRL trainers) and the CPU stand-in for TRL's LM head."""
