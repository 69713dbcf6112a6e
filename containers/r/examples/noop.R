# The no-op model, like Clipper's noop container: "1.0" for every input (for tests and benchmarks).
predict <- function(inputs) rep("1.0", length(inputs))
