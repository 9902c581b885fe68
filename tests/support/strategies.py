"""Hypothesis strategies shared by the fuzz tests."""

from __future__ import annotations

from hypothesis import strategies as st

#: Any JSON scalar, with integers that fit in 64 bits (what JSON parsers accept).
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)

#: Any JSON value: scalars nested in small lists and objects.
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)
