// Every DTRAIN_* environment variable is read here and nowhere else, so the table of
// variables (docs/environment.md) is this file. Bad values are InputErrors naming the variable.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace dtrain {

struct EnvConfig {
  std::optional<size_t> fusion_threshold_bytes;  // DTRAIN_FUSION_THRESHOLD (bytes)
  std::optional<std::string> tf_config;          // TF_CONFIG (TensorFlow's name, kept)
  std::optional<std::string> cache_dir;          // DTRAIN_CACHE_DIR: decompressed .gz data
  // DTRAIN_REQUIRE_GPU=1: a GPU test or job that would skip for want of a usable GPU fails
  // instead, naming the reason (scripts/gpu-check.sh sets it).
  bool require_gpu = false;
  // DTRAIN_CUDA_SYNC=1: the GPU backend waits for every kernel, GEMM and cuDNN call and checks it
  // there (debugging: a kernel's fault is otherwise reported at the next wait, by another call).
  bool cuda_sync = false;
  std::optional<uint64_t> job_id;  // DTRAIN_JOB_ID (the launcher sets one per job)
  // --secure: DTRAIN_PS_{SERVER,CLIENT}_{PUBLIC,SECRET}_KEY by full name, and DTRAIN_PS_KEY_FILE
  std::map<std::string, std::string> ps_keys;
  std::optional<std::string> ps_key_file;
  // DTRAIN_PS_SHM: 1 (default) lets a worker and a ps task on one machine move the floats through
  // shared memory; 0 keeps everything in ZeroMQ payload frames.
  bool ps_shm = true;
  // DTRAIN_ALLREDUCE_SHM: 1 (default) lets CPU ranks on one machine reduce through MPI-3 shared
  // memory inside the optimizer step; 0 uses MPI_Allreduce.
  bool allreduce_shm = true;
  // DTRAIN_HIERARCHICAL: 1 forces the hierarchical allreduce on CPU ranks (every machine holding
  // the same number of ranks), 0 keeps one flat MPI_Allreduce; unset: hierarchical when the job
  // spans several machines with several ranks on each.
  std::optional<bool> hierarchical;
  // DTRAIN_STALL_WARNING, DTRAIN_STALL_TIMEOUT: seconds (the flags --stall-warning and
  // --stall-timeout win).
  std::optional<double> stall_warning_s, stall_timeout_s;
  // DTRAIN_NETWORK_INTERFACE=IF[,IF] (dtrainrun --network-interface sets it): ps tasks listen on
  // the first one's address and workers connect from it (MPI gets it from mpirun's options).
  std::vector<std::string> network_interfaces;
  // Ranks in the job when an MPI launcher started this process (OMPI_COMM_WORLD_SIZE, PMI_SIZE,
  // PMIX_SIZE or MPI_LOCALNRANKS, whichever is set), else 0.
  size_t mpi_world_size = 0;
};

// Reads the environment (each call reads it afresh, so tests can set variables).
EnvConfig read_env();

// The variables behind --resume, read when the training flags are parsed (read_env() reads the
// rest later). DTRAIN_RESUME: --resume when the flag is not given (dtrainrun sets it on a
// restart); DTRAIN_RESUME_JOB: dtrainrun's restarts set it to the job's DTRAIN_JOB_ID so that only
// a checkpoint this job wrote is resumed; DTRAIN_JOB_ID: written into the job's checkpoints.
struct ResumeEnv {
  std::optional<bool> resume;
  std::optional<uint64_t> resume_job;
  std::optional<uint64_t> job_id;
};
ResumeEnv read_resume_env();

}  // namespace dtrain
