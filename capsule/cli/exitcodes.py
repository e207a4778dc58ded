"""Exit codes of the capsule command, in one place."""

OK = 0
POLICY_ERRORS = 1  # check: the policy has errors; diff: the policies differ
INTERNAL_ERROR = 2  # a bug in Capsule, never the user's fault
STRICT_WARNINGS = 3  # check --strict: warnings only
CAPSULE_FAILED = 125  # trace/enforce: Capsule itself failed (as `env` and `docker run`)
NOT_EXECUTABLE = 126  # the command exists but cannot be executed
NOT_FOUND = 127  # the command was not found, as a shell says
USAGE = 64  # bad options or arguments (sysexits EX_USAGE); never a policy finding
