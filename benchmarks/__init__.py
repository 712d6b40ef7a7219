"""The benchmark suite: flask-impulse against the Node reference broker, same machine, same
load generator, same run. See benchmarks/README.md."""
