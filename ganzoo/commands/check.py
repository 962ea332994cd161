"""ganzoo check [NAME ...] [--plugin DIST] [--device cuda]

Runs the registry-derived property checks (:mod:`ganzoo.testing.conformance`, the same ones the
test suite runs) on installed blocks: one line per check, a summary, exit 0 when all pass, 1 when
any fails, 2 for bad arguments. Heavy imports (torch, hypothesis) happen in :func:`main` only.
"""
from __future__ import annotations

import argparse
import builtins
import contextlib
import sys
import tempfile
import time

NAME = "check"
HELP = "run the property checks on installed blocks (built-ins and plugins): the conformance kit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="block names or globs, optionally KIND:NAME (e.g. hinge, sagan, 'example.*', norm:none); "
                        "default: every block")
    p.add_argument("--plugin", metavar="DIST", help="only the blocks registered by this distribution, "
                   "e.g. ganzoo-example-plugin")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the blocks run (default cpu)")
    p.add_argument("-x", "--exitfirst", action="store_true", help="stop at the first failing check")


_GROUP = getattr(builtins, "BaseExceptionGroup", ())  # Python >= 3.11


def _reason(exc: BaseException) -> str:
    """One line: an assertion's message, else the exception's type and first line (hypothesis reports
    several distinct failures as a group: the first one, and how many)."""
    if isinstance(exc, _GROUP) and exc.exceptions:
        more = len(exc.exceptions) - 1
        return _reason(exc.exceptions[0]) + (f" (and {more} more distinct failure{'s' * (more > 1)})" if more else "")
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, AssertionError):
        return first or "assertion failed"
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def main(args: argparse.Namespace) -> int:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("ganzoo check needs hypothesis: pip install 'ganzoo[testing]'", file=sys.stderr)
        return 2
    with _hypothesis_home():
        return _run(args)


@contextlib.contextmanager
def _hypothesis_home():
    """Hypothesis keeps caches in ``./.hypothesis``: point it at a temporary folder while checking, so
    ``ganzoo check`` leaves nothing in the user's folder, and restore it after."""
    from hypothesis import configuration

    before = getattr(configuration, "__hypothesis_home_directory", None)
    with tempfile.TemporaryDirectory(prefix="ganzoo-check-") as home:
        configuration.set_hypothesis_home_dir(home)
        try:
            yield
        finally:
            configuration.set_hypothesis_home_dir(before)


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..testing.conformance import SelectionError, iter_checks

    if args.device == "cuda" and not torch.cuda.is_available():
        print("ganzoo check: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    try:
        checks = list(iter_checks(args.names or None, plugin=args.plugin, device=args.device))
    except SelectionError as exc:
        print(f"ganzoo check: {exc}", file=sys.stderr)
        return 2
    if not checks:
        print("ganzoo check: nothing to check (datasets and metrics have no property checks; "
              "their contract is checked when they register)")
        return 0
    if args.device == "cpu":
        torch.set_num_threads(1)  # the blocks are checked on tiny tensors: threads only spin (and share CI cores)
    w_kind = max(len(c.kind) for c in checks)
    w_name = max(len(c.name) for c in checks)
    w_prec = max(len(c.precision) for c in checks)
    failed = ran = 0
    start = time.perf_counter()
    for kind, name, precision, run in checks:
        t0 = time.perf_counter()
        ran += 1
        try:
            run()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001  (a broken block must be reported, not crash the kit)
            failed += 1
            status, reason = "FAIL", _reason(exc)
        else:
            status, reason = "PASS", ""
        line = f"{status}  {kind:<{w_kind}}  {name:<{w_name}}  {precision:<{w_prec}}  {time.perf_counter() - t0:5.1f}s"
        print(f"{line}  {reason}".rstrip(), flush=True)
        if failed and args.exitfirst:
            break
    skipped = len(checks) - ran
    print(f"{ran} checks: {ran - failed} passed, {failed} failed"
          + (f", {skipped} not run (-x)" if skipped else "") + f" in {time.perf_counter() - start:.1f}s")
    return 1 if failed else 0
