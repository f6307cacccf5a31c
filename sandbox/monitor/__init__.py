"""What the supervisor watches from outside the jail: `procmon` (every exec, through the
proc connector; `procreader` its reader process, `proctree` what /proc says of a
process), `sampler` and `resource_rules` (the cgroup's counters and their breaches),
`honeywatch` (decoy files touched).
"""
