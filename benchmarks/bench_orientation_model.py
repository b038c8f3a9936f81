"""Throughput of the orientation transformer's model stage on the CPU (issue 5 budget: >= 5,000 patterns/s).

Run: ``.venv/bin/python benchmarks/bench_orientation_model.py``
"""

from __future__ import annotations

import time

import torch

from stemkit.orientation import ModelConfig, OrientationTransformer


def main(batch: int = 1024, tokens: int = 32, repeats: int = 5) -> None:
    features = torch.randn(batch, tokens, 5)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    for config in (ModelConfig(), ModelConfig(d_model=96, feedforward=192)):
        model = OrientationTransformer(config).eval()
        with torch.inference_mode():
            model(features, mask)
            start = time.perf_counter()
            for _ in range(repeats):
                model(features, mask)
            seconds = (time.perf_counter() - start) / repeats
        parameters = sum(p.numel() for p in model.parameters())
        print(f"d_model={config.d_model} feedforward={config.feedforward} layers={config.n_layers} "
              f"({parameters} parameters), batch {batch}, {tokens} tokens, {torch.get_num_threads()} threads: "
              f"{batch / seconds:.0f} patterns/s")


if __name__ == "__main__":
    main()
