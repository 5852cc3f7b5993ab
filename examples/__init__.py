"""Examples that use ugrad from outside the package (run from the repository
root, where `examples` is importable like `experiments`)."""
