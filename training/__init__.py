"""Plain-Python training: DeepSpeed full fine-tuning, the peft LoRA baseline, and what they share.

Modules: ``schedule`` (warmup + cosine LR), ``deepspeed_config`` (config builder), ``data`` (length-grouped
micro-batches), ``replay`` (general-domain replay mixing), ``checkpoints`` (atomic save / resume / export),
``full_ft`` (the DeepSpeed entry point run under a launcher), ``launcher`` (launch command + subprocess), ``lora``.
Nothing here imports Prefect.
"""
