"""The benchmark engine: matched Hugging Face-vs-Unsloth fine-tuning runs whose numbers hold up.

  spec.py       BenchmarkSpec: what to compare (model, providers, modes, shape, data, repeats)
  synthetic.py  random-init models from public config.json values ("synthetic weights")
  variant.py    ONE measured run in its own process: python -m trainers.benchmark.variant
  runner.py     the job: python -m trainers.benchmark.runner RUN_DIR (every variant, then results)
  report.py     matching checks, the table, Markdown / CSV / JSON export
MFU's count and the GPU peak table are trainers/flops.py, shared with training runs.

Nothing here imports gradio or fastapi; the variant imports unsloth first for unsloth runs and
never for huggingface runs.
"""
