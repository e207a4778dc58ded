"""The compat enforcement backend: Landlock, seccomp and cgroup BPF hooks, for kernels
where BPF LSM programs cannot load.

`plan` splits a policy over the mechanisms and writes the coverage report; `shim` is
the first program of the sandbox; `files` translates path rules into Landlock grants;
`syscalls` and `seccomp` hold the filter and its supervisor; `network`/`sockguard` and
`devices` drive the cgroup hooks of bpf/compat/; `denials` reports Landlock's refusals.
"""
