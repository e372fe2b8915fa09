"""Benchmarks of xsearch against its issue-6 targets and its peers; see bench/README.md."""
