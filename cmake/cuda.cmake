# CUDA is optional: DTRAIN_CUDA=AUTO turns it on when the toolkit is found.
set(DTRAIN_CUDA AUTO CACHE STRING "Build the CUDA backend: AUTO, ON or OFF")
set(DTRAIN_HAVE_CUDA OFF)
