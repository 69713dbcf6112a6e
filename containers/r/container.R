#!/usr/bin/env Rscript
# Clipper model container for R functions: Clipper RPC v3 (docs/protocol.md, Part 1) over ZeroMQ (pbdZMQ).
#
#   Rscript container.R [MODEL]
#
# MODEL (or $CLIPPER_R_MODEL, else $CLIPPER_MODEL_PATH) is an R source file that defines the model function
# (named `predict`, or $CLIPPER_R_FUNCTION), an .rds file holding the function, or a directory holding
# model.rds or model.R. The function takes one batch and returns one output per input:
#
#   predict <- function(inputs) -> character vector (any atomic vector; as.character() is applied)
#
# inputs: integers -> a list of integer vectors; floats (float32) and doubles -> a list of numeric vectors;
# bytes -> a list of raw vectors; strings -> a character vector (UTF-8).
#
# Environment, as every Clipper container: CLIPPER_MODEL_NAME, CLIPPER_MODEL_VERSION (required), CLIPPER_IP
# (127.0.0.1), CLIPPER_PORT (7000; comma-separated ports for a frontend run with --workers), CLIPPER_INPUT_TYPE
# (doubles; Clipper's aliases work), CLIPPER_READY_FILE (touched once registered), CLIPPER_HEARTBEAT_INTERVAL
# (seconds, 1), CLIPPER_SESSION_TIMEOUT (seconds, 10), CLIPPER_LOG_LEVEL (WARNING; or INFO, DEBUG),
# CLIPPER_METRICS_PORT (Prometheus text on GET /metrics there, the clipper_mc_* metrics of docs/containers.md;
# unset or empty: none) and CLIPPER_METRICS_HOST (127.0.0.1). The endpoint is a ZMQ_STREAM socket polled with the
# frontend's, so a scrape is answered between batches.
#
# The loop: connect a DEALER, send a heartbeat, register when the frontend asks (heartbeat reply type 1),
# heartbeat when idle for the heartbeat interval, answer batches; after the session timeout without a message
# from the frontend, close the socket and start a new session (so the container registers again after the
# frontend restarts). A batch whose model fails (an R error, a wrong number of outputs) is answered with the
# error marker "\0error:<message>" for every input, and the container keeps serving. R runs one thing at a time,
# so no heartbeat goes out while the model runs. SIGINT ends the container cleanly (exit 0); R cannot catch
# SIGTERM, so run it through `clipper-r-container`, which turns SIGTERM into SIGINT.

suppressPackageStartupMessages({
  if (!requireNamespace("pbdZMQ", quietly = TRUE)) {
    cat("container.R: error: the R package pbdZMQ is not installed (Debian: apt-get install r-cran-pbdzmq)\n",
        file = stderr())
    quit(save = "no", status = 2)
  }
})

RPC_VERSION <- 3L
MSG_NEW_CONTAINER <- 0L
MSG_CONTAINER_CONTENT <- 1L
MSG_HEARTBEAT <- 2L
HEARTBEAT_REQUEST_METADATA <- 1L
REQUEST_PREDICT <- 0L
REQUEST_FEEDBACK <- 1L
MAX_ERROR_BYTES <- 500L

INPUT_TYPE_CODES <- c(bytes = 0L, integers = 1L, floats = 2L, doubles = 3L, strings = 4L)
INPUT_TYPE_ALIASES <- c(
  integers = "integers", ints = "integers", integer = "integers", int = "integers", i = "integers",
  floats = "floats", float = "floats", f = "floats",
  doubles = "doubles", double = "doubles", d = "doubles",
  strings = "strings", string = "strings", str = "strings", strs = "strings", s = "strings",
  bytes = "bytes", byte = "bytes", b = "bytes")
ELEMENT_BYTES <- c(1L, 4L, 4L, 8L, 1L)  # by code + 1

ZMQ_DEALER <- 5L
ZMQ_STREAM <- 11L
ZMQ_LINGER <- 17L
ZMQ_RCVMORE <- 13L
ZMQ_SNDTIMEO <- 28L
ZMQ_SNDMORE <- 2L
ZMQ_POLLIN <- 1L
EINTR <- 4L

`%||%` <- function(a, b) if (is.null(a) || length(a) == 0L || is.na(a[1])) b else a

LOG_LEVELS <- c(DEBUG = 10L, INFO = 20L, WARNING = 30L, ERROR = 40L)
log_level <- unname(LOG_LEVELS[toupper(Sys.getenv("CLIPPER_LOG_LEVEL", "WARNING"))]) %||% 30L

log_msg <- function(level, ...) {
  if (LOG_LEVELS[[level]] >= log_level) {
    cat(format(Sys.time(), "%Y-%m-%d %H:%M:%OS3"), " ", level, " clipper.r_container: ", ..., "\n",
        sep = "", file = stderr())
  }
}

die <- function(...) {
  cat("container.R: error: ", ..., "\n", sep = "", file = stderr())
  quit(save = "no", status = 2)
}

# ---------------------------------------------------------------------------------------------- codec

u32 <- function(x) writeBin(as.integer(x), raw(), size = 4L, endian = "little")

read_u32 <- function(frame, what) {
  if (length(frame) != 4L) stop(sprintf("%s: expected a 4-byte u32 frame, got %d bytes", what, length(frame)))
  v <- readBin(frame, "integer", n = 2L, size = 2L, signed = FALSE, endian = "little")
  v[1] + 65536 * v[2]
}

# u64 little-endian values of a frame, as doubles (exact below 2^53)
read_u64s <- function(frame) {
  w <- readBin(frame, "integer", n = length(frame) %/% 2L, size = 2L, signed = FALSE, endian = "little")
  as.vector(matrix(as.numeric(w), nrow = 4L) |> crossprod(c(1, 65536, 4294967296, 281474976710656)))
}

u64s <- function(values) {
  writeBin(as.vector(rbind(as.integer(values), 0L)), raw(), size = 4L, endian = "little")
}

HEARTBEAT <- list(raw(0), u32(MSG_HEARTBEAT))
CONTENT <- u32(MSG_CONTAINER_CONTENT)

new_container_frames <- function(name, version, code) {
  list(raw(0), u32(MSG_NEW_CONTAINER), charToRaw(enc2utf8(name)), charToRaw(enc2utf8(version)),
       charToRaw(as.character(code)), u32(RPC_VERSION))
}

response_frames <- function(msg_id, outputs) {
  n <- length(outputs)
  c(list(raw(0), CONTENT, msg_id, u64s(8L * (n + 1L)), u64s(c(n, lengths(outputs)))), outputs)
}

# `message` cut to MAX_ERROR_BYTES of UTF-8 without splitting a character, behind "\0error:"
error_output <- function(message) {
  raw_msg <- charToRaw(enc2utf8(message))
  if (length(raw_msg) > MAX_ERROR_BYTES) {
    raw_msg <- raw_msg[seq_len(MAX_ERROR_BYTES)]
    lead <- max(which(as.integer(raw_msg) < 0x80L | as.integer(raw_msg) >= 0xC0L))
    b <- as.integer(raw_msg[lead])
    need <- if (b < 0x80L) 1L else if (b >= 0xF0L) 4L else if (b >= 0xE0L) 3L else 2L
    if (length(raw_msg) - lead + 1L < need) raw_msg <- raw_msg[seq_len(lead - 1L)]
  }
  c(as.raw(0L), charToRaw("error:"), raw_msg)
}

# A frontend -> container message as list(kind = "heartbeat" | "predict" | "feedback", ...); stop() when malformed.
parse_request <- function(frames) {
  nf <- length(frames)
  if (nf < 3L) stop(sprintf("message too short: %d frames", nf))
  if (length(frames[[1]]) != 0L) stop("missing empty delimiter frame")
  version <- read_u32(frames[[2]], "rpc version")
  if (version != RPC_VERSION) stop(sprintf("unsupported rpc version %.0f (expected %d)", version, RPC_VERSION))
  msg_type <- read_u32(frames[[3]], "message type")
  if (msg_type == MSG_HEARTBEAT) {
    if (nf != 4L) stop(sprintf("heartbeat: expected 4 frames, got %d", nf))
    return(list(kind = "heartbeat", heartbeat_type = read_u32(frames[[4]], "heartbeat type")))
  }
  if (msg_type != MSG_CONTAINER_CONTENT) stop(sprintf("unexpected message type %.0f", msg_type))
  if (nf < 5L) stop(sprintf("container content: expected at least 5 frames, got %d", nf))
  msg_id <- frames[[4]]
  read_u32(msg_id, "message id")
  request_type <- read_u32(frames[[5]], "request type")
  if (request_type == REQUEST_FEEDBACK) return(list(kind = "feedback", msg_id = msg_id))
  if (request_type != REQUEST_PREDICT) stop(sprintf("unknown request type %.0f", request_type))
  if (nf < 7L) stop(sprintf("predict: expected at least 7 frames, got %d", nf))
  header_frame <- frames[[7]]
  header_len <- if (length(frames[[6]]) == 8L) read_u64s(frames[[6]]) else -1
  if (header_len != length(header_frame) || header_len < 16 || header_len %% 8 != 0) {
    stop(sprintf("predict: bad header length %.0f for %d bytes", header_len, length(header_frame)))
  }
  header <- read_u64s(header_frame)
  n <- header[2]
  inputs <- frames[-(1:7)]
  if (length(header) != n + 2 || length(inputs) != n) {
    stop(sprintf("predict: header announces %.0f inputs, got %d frames", n, length(inputs)))
  }
  if (n > 0 && any(header[-(1:2)] != lengths(inputs))) stop("predict: input frame sizes differ from the header")
  list(kind = "predict", msg_id = msg_id, input_type = header[1], inputs = inputs)
}

# What the model gets: a list of vectors (numeric types, bytes) or a character vector (strings).
decode_inputs <- function(code, inputs) {
  if (code == 4L) {
    if (length(inputs) == 0L) return(character(0))
    if (any(vapply(inputs, function(b) any(b == as.raw(0L)), logical(1)))) {
      batch_stop("a string input holds a NUL byte, which R strings cannot hold")
    }
    out <- vapply(inputs, rawToChar, "", USE.NAMES = FALSE)
    Encoding(out) <- "UTF-8"
    bad <- !validUTF8(out)
    if (any(bad)) out[bad] <- iconv(out[bad], "UTF-8", "UTF-8", sub = "\uFFFD")
    return(out)
  }
  width <- ELEMENT_BYTES[code + 1L]
  if (any(lengths(inputs) %% width != 0L)) {
    batch_stop(sprintf("input size is not a multiple of %d bytes (%s)", width, names(INPUT_TYPE_CODES)[code + 1L]))
  }
  switch(code + 1L,
         inputs,  # bytes: raw vectors as they are
         lapply(inputs, function(b) readBin(b, "integer", n = length(b) %/% 4L, size = 4L, endian = "little")),
         lapply(inputs, function(b) readBin(b, "double", n = length(b) %/% 4L, size = 4L, endian = "little")),
         lapply(inputs, function(b) readBin(b, "double", n = length(b) %/% 8L, size = 8L, endian = "little")))
}

# One raw vector per output, or stop() with why the result is not one output per input.
encode_outputs <- function(result, n) {
  if (is.list(result)) {
    if (!all(vapply(result, function(o) is.atomic(o) && length(o) == 1L, logical(1)))) {
      batch_stop(sprintf("model returned a list that is not of %d single values", n))
    }
    result <- unlist(result, use.names = FALSE)
  }
  if (!is.atomic(result) || is.null(result)) {
    batch_stop(sprintf("model returned %s, expected a character vector of %d outputs", class(result)[1], n))
  }
  if (length(result) != n) batch_stop(sprintf("model returned %d outputs for a batch of %d", length(result), n))
  out <- as.character(result)
  out[is.na(out)] <- "NA"
  lapply(enc2utf8(out), charToRaw)
}

# An error of the container itself (not of the model): its message alone is reported.
batch_stop <- function(message) {
  stop(structure(class = c("batch_error", "error", "condition"), list(message = message, call = NULL)))
}

condition_text <- function(e) {
  if (inherits(e, "batch_error")) return(conditionMessage(e))
  call <- conditionCall(e)
  where <- if (is.null(call)) "" else paste0(" in ", paste(deparse(call, nlines = 1L), collapse = ""))
  paste0("R error", where, ": ", conditionMessage(e))
}

# `times` (an environment, with metrics on): gets `parsed` (inputs decoded) and `failed`
run_batch <- function(predict, request, code, times = NULL) {
  n <- length(request$inputs)
  result <- tryCatch({
    if (request$input_type != code) {
      batch_stop(sprintf("request input type %s does not match the container's input type %s",
                         names(INPUT_TYPE_CODES)[match(request$input_type, INPUT_TYPE_CODES)] %||% request$input_type,
                         names(INPUT_TYPE_CODES)[code + 1L]))
    }
    inputs <- decode_inputs(code, request$inputs)
    if (!is.null(times)) times$parsed <- now()
    encode_outputs(predict(inputs), n)
  }, error = function(e) structure(condition_text(e), class = "failed_batch"))
  if (!is.null(times)) times$failed <- inherits(result, "failed_batch")
  if (inherits(result, "failed_batch")) {
    log_msg("ERROR", sprintf("batch of %d failed: %s", n, unclass(result)))
    return(rep(list(error_output(unclass(result))), n))
  }
  result
}

# ---------------------------------------------------------------------------------------------- model

load_model <- function(spec, fname) {
  if (!nzchar(spec)) {
    die("no model: pass a model file (Rscript container.R model.R), or set CLIPPER_R_MODEL or ",
        "CLIPPER_MODEL_PATH (a directory holding model.rds or model.R)")
  }
  if (dir.exists(spec)) {
    found <- file.path(spec, c("model.rds", "model.R"))
    found <- found[file.exists(found)]
    if (length(found) == 0L) die("no model: ", spec, " holds neither model.rds nor model.R")
    spec <- found[1]
  }
  if (!file.exists(spec)) die("no model: ", spec, " does not exist")
  spec <- normalizePath(spec)
  if (grepl("\\.rds$", spec, ignore.case = TRUE)) {
    f <- tryCatch(readRDS(spec), error = function(e) die("cannot read ", spec, ": ", conditionMessage(e)))
    if (!is.function(f)) die(spec, " does not hold a function (it holds ", class(f)[1], ")")
    return(f)
  }
  env <- new.env(parent = globalenv())
  old <- setwd(dirname(spec))  # so that the model can read files next to it
  on.exit(setwd(old))
  tryCatch(sys.source(spec, envir = env, keep.source = FALSE),
           error = function(e) die("cannot load ", spec, ": ", conditionMessage(e)))
  f <- get0(fname, envir = env, inherits = FALSE)
  if (!is.function(f)) die(spec, " does not define a function named ", fname)
  f
}

# ---------------------------------------------------------------------------------------------- sockets

# FALSE when the message cannot be queued (the send timeout passed: the frontend is long gone)
send_frames <- function(sock, frames) {
  last <- length(frames)
  for (i in seq_len(last)) {
    frame <- frames[[i]]
    rc <- .Call("R_zmq_send_raw", sock, frame, length(frame), if (i < last) ZMQ_SNDMORE else 0L, PACKAGE = "pbdZMQ")
    if (rc < 0) return(FALSE)
  }
  TRUE
}

recv_frames <- function(sock) {
  frames <- list()
  repeat {
    frames[[length(frames) + 1L]] <- .Call("R_zmq_msg_recv", sock, 0L, PACKAGE = "pbdZMQ")
    more <- integer(1)  # written in place by pbdZMQ: a fresh vector each time
    .Call("R_zmq_getsockopt", sock, ZMQ_RCVMORE, more, 1L, PACKAGE = "pbdZMQ")
    if (more != 1L) return(frames)
  }
}

# ---------------------------------------------------------------------------------------------- metrics

# The clipper_mc_* metrics (the list, with types and buckets: clipper/model_runtime/metrics.py's MC_METRICS).
CLIPPER_LATENCY_BUCKETS <- c(5, 10, 20, 35, 50, 75, 100, 150, 200, 250, 300, 400, 500)
CLIPPER_RPC_BUCKETS <- c(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MC_HISTOGRAMS <- list(
  clipper_mc_pred_batch_size = list(c(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), "Inputs per prediction request."),
  clipper_mc_recv_time_ms = list(CLIPPER_RPC_BUCKETS, "The time in ms takes to receive RPC call: request read to parsed."),
  clipper_mc_queue_wait_ms = list(c(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50, 100, 500, 1000),
                                  "The time in ms a received request waited before its batch started."),
  clipper_mc_parse_time_ms = list(CLIPPER_RPC_BUCKETS, "The time in ms takes to parse RPC call: decoding the inputs."),
  clipper_mc_handle_time_ms = list(CLIPPER_LATENCY_BUCKETS, "The time in ms takes to make prediction (successful batches)."),
  clipper_mc_end_to_end_latency_ms = list(CLIPPER_LATENCY_BUCKETS,
                                          "The time in ms takes from receive RPC call to send off prediction."))

new_metrics <- function() {
  m <- new.env()
  m$batches <- m$inputs <- m$errors <- 0
  m$counts <- lapply(MC_HISTOGRAMS, function(h) numeric(length(h[[1]]) + 1L))
  m$sums <- lapply(MC_HISTOGRAMS, function(h) 0)
  m
}

observe <- function(m, name, value) {
  i <- findInterval(value, MC_HISTOGRAMS[[name]][[1]], left.open = TRUE) + 1L  # le: value <= bound
  m$counts[[name]][i] <- m$counts[[name]][i] + 1
  m$sums[[name]] <- m$sums[[name]] + value
}

record_batch <- function(m, n, t) {
  m$batches <- m$batches + 1
  m$inputs <- m$inputs + n
  observe(m, "clipper_mc_pred_batch_size", n)
  observe(m, "clipper_mc_recv_time_ms", 1000 * (t$received - t$first))
  observe(m, "clipper_mc_queue_wait_ms", 0)  # one thread: a batch starts as soon as it is parsed
  if (t$failed) {
    m$errors <- m$errors + 1
  } else {
    observe(m, "clipper_mc_parse_time_ms", 1000 * (t$parsed - t$received))
    observe(m, "clipper_mc_handle_time_ms", 1000 * (t$done - t$parsed))
  }
  observe(m, "clipper_mc_end_to_end_latency_ms", 1000 * (t$done - t$first))
}

label_number <- function(x) {  # as Python's repr() writes these bounds: "5.0", "0.1"
  s <- as.character(x)
  if (!grepl("[.e]", s)) s <- paste0(s, ".0")
  s
}

render_metrics <- function(m) {
  out <- character()
  counter <- function(name, help, value) {
    out <<- c(out, paste0("# HELP ", name, " ", help), paste0("# TYPE ", name, " counter"),
              paste0(name, " ", sprintf("%.0f", value)))
  }
  counter("clipper_mc_pred_total", "Prediction requests (batches) answered, failed ones included.", m$batches)
  counter("clipper_mc_pred_inputs_total", "Inputs answered (predictions), failed batches included.", m$inputs)
  counter("clipper_mc_pred_errors_total", "Prediction requests (batches) answered with errors.", m$errors)
  for (name in names(MC_HISTOGRAMS)) {
    bounds <- MC_HISTOGRAMS[[name]][[1]]
    cumulative <- cumsum(m$counts[[name]])
    les <- c(vapply(bounds, label_number, ""), "+Inf")
    out <- c(out, paste0("# HELP ", name, " ", MC_HISTOGRAMS[[name]][[2]]), paste0("# TYPE ", name, " histogram"),
             sprintf('%s_bucket{le="%s"} %.0f', name, les, cumulative),
             paste0(name, "_sum ", sprintf("%.17g", m$sums[[name]])),
             paste0(name, "_count ", sprintf("%.0f", cumulative[length(cumulative)])))
  }
  paste0(paste(out, collapse = "\n"), "\n")
}

# One request on the ZMQ_STREAM socket: frames [peer id, bytes]; an empty payload is a connect/disconnect notice.
# The answer goes back as [id, response], then [id, nothing], which closes the connection.
serve_http <- function(stream, buffers, m) {
  frames <- recv_frames(stream)
  if (length(frames) < 2L) return(invisible())
  id <- frames[[1]]
  key <- paste(as.character(id), collapse = "")
  data <- frames[[2]]
  if (length(data) == 0L) {
    if (exists(key, envir = buffers, inherits = FALSE)) rm(list = key, envir = buffers)
    return(invisible())
  }
  buf <- c(if (exists(key, envir = buffers, inherits = FALSE)) get(key, envir = buffers), data)
  text <- rawToChar(buf[buf != as.raw(0L)])
  if (!grepl("\r\n\r\n", text, fixed = TRUE) && length(buf) < 16384L) {
    assign(key, buf, envir = buffers)
    return(invisible())
  }
  if (exists(key, envir = buffers, inherits = FALSE)) rm(list = key, envir = buffers)
  parts <- strsplit(sub("\r\n.*", "", text), " ", fixed = TRUE)[[1]]
  path <- if (length(parts) >= 2L) sub("\\?.*", "", parts[2]) else ""
  plain <- "text/plain; charset=utf-8"
  answer <- if (length(parts) < 3L) {
    list("400 Bad Request", plain, "bad request\n")
  } else if (path != "/metrics") {
    list("404 Not Found", plain, "not found: GET /metrics\n")
  } else if (parts[1] != "GET") {
    list("405 Method Not Allowed", plain, "method not allowed: GET /metrics\n")
  } else {
    list("200 OK", "text/plain; version=0.0.4; charset=utf-8", render_metrics(m))
  }
  body <- charToRaw(answer[[3]])
  head <- charToRaw(paste0("HTTP/1.1 ", answer[[1]], "\r\nContent-Type: ", answer[[2]], "\r\nContent-Length: ",
                           length(body), "\r\nConnection: close\r\n\r\n"))
  send_frames(stream, list(id, c(head, body)))
  send_frames(stream, list(id, raw(0)))
  invisible()
}

# ---------------------------------------------------------------------------------------------- the loop

config <- function(args) {
  env <- function(name, default = "") Sys.getenv(name, default)
  name <- env("CLIPPER_MODEL_NAME")
  version <- env("CLIPPER_MODEL_VERSION")
  if (!nzchar(name)) die("model name is required: set CLIPPER_MODEL_NAME")
  if (!nzchar(version)) die("model version is required: set CLIPPER_MODEL_VERSION")
  type_name <- env("CLIPPER_INPUT_TYPE", "doubles")
  canonical <- INPUT_TYPE_ALIASES[tolower(trimws(type_name))]
  if (is.na(canonical)) {
    die("unknown input type '", type_name, "' (CLIPPER_INPUT_TYPE); allowed: ", paste(names(INPUT_TYPE_ALIASES),
                                                                                   collapse = ", "))
  }
  ports <- suppressWarnings(as.integer(strsplit(env("CLIPPER_PORT", "7000"), ",", fixed = TRUE)[[1]]))
  if (length(ports) == 0L || anyNA(ports) || any(ports < 1L | ports > 65535L)) {
    die("invalid port '", env("CLIPPER_PORT"), "' (CLIPPER_PORT: a port or comma-separated ports)")
  }
  metrics_port <- trimws(env("CLIPPER_METRICS_PORT"))
  if (nzchar(metrics_port)) {
    if (!grepl("^[0-9]+$", metrics_port) || as.numeric(metrics_port) > 65535) {
      die("invalid CLIPPER_METRICS_PORT '", metrics_port, "': expected a port, or empty")
    }
    metrics_port <- as.integer(metrics_port)
  } else {
    metrics_port <- NA_integer_
  }
  metrics_host <- env("CLIPPER_METRICS_HOST")
  positive <- function(var, default) {
    v <- suppressWarnings(as.numeric(env(var, default)))
    if (is.na(v) || v <= 0) die(var, " must be a positive number of seconds, got '", env(var), "'")
    v
  }
  list(name = name, version = version, input_type = unname(canonical), code = INPUT_TYPE_CODES[[canonical]],
       addresses = sprintf("tcp://%s:%d", env("CLIPPER_IP", "127.0.0.1"), ports),
       heartbeat_interval = positive("CLIPPER_HEARTBEAT_INTERVAL", "1"),
       session_timeout = positive("CLIPPER_SESSION_TIMEOUT", "10"),
       ready_file = env("CLIPPER_READY_FILE"),
       metrics_port = metrics_port, metrics_host = if (nzchar(metrics_host)) metrics_host else "127.0.0.1",
       model = if (length(args) > 0L) args[1] else env("CLIPPER_R_MODEL", env("CLIPPER_MODEL_PATH")),
       fname = env("CLIPPER_R_FUNCTION", "predict"))
}

now <- function() as.numeric(proc.time()[["elapsed"]])

serve <- function(cfg, predict, ctx) {
  # one session (an environment) per frontend address
  open_session <- function(address) {
    s <- new.env()
    s$address <- address
    s$sock <- pbdZMQ::zmq.socket(ctx, ZMQ_DEALER)
    pbdZMQ::zmq.setsockopt(s$sock, ZMQ_LINGER, 0L)
    pbdZMQ::zmq.setsockopt(s$sock, ZMQ_SNDTIMEO, 1000L)
    if (pbdZMQ::zmq.connect(s$sock, address) < 0) die("cannot connect to ", address)
    s$heard <- s$sent <- now()
    send(s, HEARTBEAT)
    s$connected <- FALSE  # like Clipper: no repeated heartbeats before the frontend answers
    log_msg("DEBUG", "session started with ", address)
    s
  }
  close_session <- function(s) pbdZMQ::zmq.close(s$sock)
  send <- function(s, frames) {
    if (send_frames(s$sock, frames)) {
      s$sent <- now()
    } else {
      log_msg("WARNING", "cannot send to ", s$address, " (its queue is full); starting a new session")
      s$heard <- -Inf
    }
  }
  ready_file <- cfg$ready_file
  feedback_logged <- FALSE
  metrics <- NULL
  stream <- NULL
  if (!is.na(cfg$metrics_port)) {
    metrics <- new_metrics()
    http_buffers <- new.env()
    stream <- pbdZMQ::zmq.socket(ctx, ZMQ_STREAM)
    pbdZMQ::zmq.setsockopt(stream, ZMQ_LINGER, 0L)
    pbdZMQ::zmq.setsockopt(stream, ZMQ_SNDTIMEO, 1000L)
    where <- sprintf("%s:%s", cfg$metrics_host, if (cfg$metrics_port == 0L) "*" else cfg$metrics_port)
    if (suppressWarnings(pbdZMQ::zmq.bind(stream, paste0("tcp://", where))) < 0) {
      die("cannot serve metrics on ", where, ": the port cannot be bound")
    }
    log_msg("INFO", "serving metrics on http://", where, "/metrics")
  }
  received_at <- 0

  handle <- function(s, frames) {
    msg <- tryCatch(parse_request(frames), error = function(e) {
      log_msg("ERROR", "dropping malformed message from the frontend: ", conditionMessage(e))
      NULL
    })
    if (is.null(msg)) return(NULL)
    if (msg$kind == "predict") {
      if (is.null(metrics)) return(response_frames(msg$msg_id, run_batch(predict, msg, cfg$code)))
      times <- new.env()
      times$first <- received_at
      times$received <- times$parsed <- now()
      outputs <- run_batch(predict, msg, cfg$code, times)
      times$done <- now()
      record_batch(metrics, length(msg$inputs), times)
      return(response_frames(msg$msg_id, outputs))
    }
    if (msg$kind == "heartbeat") {
      if (msg$heartbeat_type == HEARTBEAT_REQUEST_METADATA) {
        log_msg("INFO", sprintf("registered %s:%s with %s", cfg$name, cfg$version, s$address))
        if (nzchar(ready_file)) {
          file.create(ready_file)
          ready_file <<- ""
        }
        return(new_container_frames(cfg$name, cfg$version, cfg$code))
      }
      return(NULL)
    }
    if (!feedback_logged) {
      feedback_logged <<- TRUE
      log_msg("WARNING", "feedback requests are not supported by this container; ignoring them")
    }
    NULL
  }

  # Started by clipper-r-container: end when it is gone (killed with SIGKILL, R would be left behind)
  parent <- suppressWarnings(as.integer(Sys.getenv("CLIPPER_R_PARENT_PID", "")))
  parent_checked <- now()

  sessions <- lapply(cfg$addresses, open_session)
  on.exit({
    for (s in sessions) close_session(s)
    if (!is.null(stream)) pbdZMQ::zmq.close(stream)
  })
  hb <- cfg$heartbeat_interval
  timeout <- cfg$session_timeout
  repeat {
    t <- now()
    if (!is.na(parent) && t - parent_checked >= 0.5) {
      parent_checked <- t
      if (!tools::pskill(parent, 0L)) {
        log_msg("WARNING", sprintf("clipper-r-container (pid %d) is gone; stopping", parent))
        return(invisible())
      }
    }
    wait <- 1  # at least once a second: the parent check
    for (i in seq_along(sessions)) {
      s <- sessions[[i]]
      if (t - s$heard >= timeout) {
        log_msg("WARNING", sprintf("nothing heard from %s for %.1f s; reconnecting", s$address, t - s$heard))
        close_session(s)
        s <- sessions[[i]] <- open_session(s$address)
      }
      if (s$connected && t - max(s$heard, s$sent) >= hb) send(s, HEARTBEAT)
      wait <- min(wait, s$heard + timeout - t, if (s$connected) max(s$heard, s$sent) + hb - t)
    }
    socks <- c(lapply(sessions, `[[`, "sock"), if (!is.null(stream)) list(stream))
    .Call("R_zmq_poll_free", PACKAGE = "pbdZMQ")
    rc <- .Call("R_zmq_poll", socks, rep(ZMQ_POLLIN, length(socks)), as.integer(max(1, ceiling(1000 * wait))),
                FALSE, PACKAGE = "pbdZMQ")
    if (rc[1] < 0) {
      if (rc[2] == EINTR) {
        Sys.sleep(0)  # lets R act on a pending SIGINT now (an interrupt condition)
        next
      }
      stop("zmq_poll failed, errno ", rc[2])
    }
    if (rc[1] == 0) next
    ready <- vapply(seq_along(socks), function(i) {
      bitwAnd(.Call("R_zmq_poll_get_revents", i - 1L, PACKAGE = "pbdZMQ"), ZMQ_POLLIN) != 0L
    }, logical(1))
    for (i in which(ready)) {
      if (i > length(sessions)) {
        serve_http(stream, http_buffers, metrics)
        next
      }
      s <- sessions[[i]]
      frames <- recv_frames(s$sock)
      if (!is.null(metrics)) received_at <- now()
      s$connected <- TRUE
      s$heard <- now()
      reply <- handle(s, frames)
      if (!is.null(reply)) {
        s$heard <- now()  # an answered batch counts as hearing from the frontend
        send(s, reply)
      }
    }
  }
}

main <- function() {
  args <- commandArgs(trailingOnly = TRUE)
  if (length(args) > 0L && args[1] %in% c("-h", "--help")) {
    cat("usage: Rscript container.R [MODEL]\n",
        "MODEL: an R file defining predict(inputs), an .rds of the function, or a directory holding model.rds\n",
        "or model.R (default: $CLIPPER_R_MODEL, else $CLIPPER_MODEL_PATH). See the comments at the top of\n",
        "container.R for the environment it reads.\n", sep = "")
    quit(save = "no", status = 0)
  }
  cfg <- config(args)
  predict <- load_model(cfg$model, cfg$fname)
  log_msg("INFO", sprintf("serving %s:%s (%s) to %s", cfg$name, cfg$version, cfg$input_type,
                          paste(cfg$addresses, collapse = ", ")))
  ctx <- pbdZMQ::zmq.ctx.new()
  status <- tryCatch({
    serve(cfg, predict, ctx)
    0L
  }, interrupt = function(e) {
    log_msg("INFO", "interrupted: stopping")
    0L
  }, error = function(e) {
    cat("container.R: error: ", conditionMessage(e), "\n", sep = "", file = stderr())
    1L
  })
  # The sockets are closed (serve's on.exit); the context goes with the process (zmq_ctx_term would wait forever
  # for a socket left open by an interrupt that came in between creating it and recording it).
  quit(save = "no", status = status)
}

main()
