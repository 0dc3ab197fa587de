"""The applications built on backprop: the command line and its commands, data sets, plots,
reports and the benchmark runner. The core (`backprop`) never imports this package."""
