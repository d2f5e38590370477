"""math-verify in a child process: the worker side of :mod:`presrm._mathverify`.

Run as ``python -m presrm._mv_worker``. It imports math-verify, warms it up,
writes ``{"ready": true}``, then answers one JSON request per line of stdin
(``{"pred": ..., "gold": ..., "gold_value": [p, q] or null}``) with one line
``{"match": true|false}`` on stdout, until stdin closes. The parent kills it
when a request overruns its time bound; nothing here needs a timeout.

Only math-verify's LaTeX extraction is used: its expression extractor hands
text to sympy's ``parse_expr`` (which evaluates Python), and presrm never does.
"""

from __future__ import annotations

import json
import os
import sys


def mv_match(pred: str, gold: str, gold_value: list[int] | None) -> bool:
    """math-verify's verdict on LaTeX ``pred`` against ``gold`` (or the exact ``gold_value`` p/q).

    >>> mv_match("$\\\\frac{3}{4}$", "$0.75$", None), mv_match("$x+1$", "$1+x$", None)
    (True, True)
    """
    from math_verify import LatexExtractionConfig, parse, verify
    from sympy import Rational

    config = [LatexExtractionConfig()]
    try:
        if gold_value is not None:
            gold_parsed = [Rational(*gold_value)]
        else:
            gold_parsed = parse(gold, extraction_config=config, parsing_timeout=None)
        pred_parsed = parse(pred, extraction_config=config, parsing_timeout=None)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))
    except Exception:  # math-verify raises a zoo of sympy errors on odd input; none of them is a match
        return False


def main() -> int:
    # Answers go to the real stdout; anything a library prints goes to stderr instead of into the protocol.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    mv_match("$\\frac{1}{2}$", "$0.5$", None)  # the LaTeX grammar loads on first use
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        req = json.loads(line)
        out.write(json.dumps({"match": mv_match(req["pred"], req["gold"], req["gold_value"])}) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
