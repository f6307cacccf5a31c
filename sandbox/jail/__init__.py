"""The jail: what a sandbox is on the host.

- `profile`, `profile_check`: the profile (TOML) and its checks;
- `firejail`: profile -> firejail argv, the jail's environment and its launch steps;
- `launch`: the child side of a start (cgroup, session, netns, TIOCSTI filter, drop);
- `spawn`: runs those steps through the compiled launcher (`fastexec/sandbox-launch.c`,
  subprocess vfork()s) or, without one, as a preexec_fn;
- `mounts`: the supervisor's tmpfs quotas, by mount(2);
- `users`, `workspace`: the agent user and the workspace;
- `cgroups`, `cgroup_layout`, `cgroup_usage`: limits and their counters (v1 and v2);
- `remount`: /var/tmp made executable inside;
- `images`: a task's OCI image as the jail's root;
- `fastexec`: a command forked inside the running jail (the exec helper).
"""
