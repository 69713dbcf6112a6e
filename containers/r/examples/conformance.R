# The conformance model (tests/test_conformance.py; the same behaviour in every language's container):
#   numbers (integers, floats, doubles): "<n>:<s>", n elements, s their sum, each truncated toward zero;
#   bytes: "<n>:<s>", s the sum of the bytes (0..255); strings: "<UTF-8 byte length>:<the string>".
# A batch holding a poisoned input (numbers: first element -7; bytes: first byte 0xEE; strings: exactly
# "poison") fails as a whole: the model raises an R error that mentions "poison", which the container turns
# into the error marker for every input of the batch.
predict <- function(inputs) {
  if (is.character(inputs)) {
    if (any(inputs == "poison")) stop("poison: the batch holds the string \"poison\"")
    return(paste0(nchar(inputs, type = "bytes"), ":", inputs))
  }
  poisoned <- vapply(inputs, function(x) {
    length(x) > 0L && if (is.raw(x)) x[1] == as.raw(0xEE) else isTRUE(x[1] == -7)
  }, logical(1))
  if (any(poisoned)) stop(sprintf("poison: input %d of the batch is poisoned", which(poisoned)[1]))
  vapply(inputs, function(x) {
    s <- sum(trunc(as.numeric(x))) + 0  # + 0 turns -0 into 0
    sprintf("%d:%.0f", length(x), s)
  }, "", USE.NAMES = FALSE)
}
