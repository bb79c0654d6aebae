"""The paper's emulated scenarios in one process (emulate) and their aggregation over seeds (experiment)."""
