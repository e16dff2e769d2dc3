"""The shared parameter docs (docdict) and fill_doc, as MNE and mne-icalabel test theirs."""

import inspect

import pytest

from mne_piunet.utils._docs import docdict, fill_doc


def test_fill_doc_fills_entries_at_the_docstring_indent():
    def func():
        """Do a thing.

        Parameters
        ----------
        %(lambda2)s
        """

    fill_doc(func)
    assert "%(" not in func.__doc__
    lines = func.__doc__.splitlines()
    k = next(i for i, line in enumerate(lines) if line.strip().startswith("lambda2 : float"))
    assert lines[k].startswith(" " * 8 + "lambda2") and lines[k + 1].startswith(" " * 12 + "Regularisation")


def test_unknown_entry_names_the_function():
    def broken():
        """%(no_such_entry)s"""

    with pytest.raises(RuntimeError, match="Error documenting .*broken.*no_such_entry"):
        fill_doc(broken)


def test_every_public_docstring_is_filled_and_every_entry_is_used():
    import mne_piunet

    used = set()
    for name in mne_piunet.__all__:
        obj = getattr(mne_piunet, name)
        members = (
            [obj] + [m for _, m in inspect.getmembers(obj, inspect.isfunction)]
            if inspect.isclass(obj)
            else [obj]
        )
        for member in members:
            doc = member.__doc__ or ""
            assert "%(" not in doc, f"{name}.{member.__name__} has an unfilled entry"
    import re
    from pathlib import Path

    source = "".join(p.read_text() for p in Path(mne_piunet.__file__).parent.rglob("*.py"))
    used = set(re.findall(r"%\((\w+)\)s", source))
    unused = set(docdict) - used - {"verbose"}
    # entries composed into others (network_params, template_params) count as used
    composed = {k for k in docdict if any(o != k and docdict[k].strip("\n") in docdict[o] for o in docdict)}
    assert {"weights", "data_fit", "mni_transform"} <= composed
    assert not unused - composed, f"docdict entries no docstring uses: {sorted(unused - composed)}"
