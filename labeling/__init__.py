"""Spending the user's labeling time where it pays: which queries to label next (suggest) and which given labels are
likely wrong (audit)."""
