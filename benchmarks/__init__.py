"""lesionseg benchmark suite: ``python -m benchmarks`` (a few minutes) or ``--quick`` (CI smoke run).

Measures side by side, in one process and on the same threads: the model forward (fp32 eager vs
the project's inference path and other candidates) with mask agreement, FLOPs vs matmul peak,
peer models, end-to-end latency and peak RSS per JPEG, ``lesionseg predict`` throughput and
training-step throughput, and writes them with the machine's description to ``results.md``.
"""
