"""dtrain: a distributed training runtime. `import dtrain.torch as dt` is its PyTorch API."""
