"""The error classes every harness command maps to an exit code."""


class HarnessError(Exception):
    """A failure the user can fix: the message names the value and what to do.

    The command line reports it without a traceback and exits with code 2.
    """

    exit_code = 2


class ScenarioError(HarnessError):
    """A scenario file that cannot be read or does not validate."""


class InfrastructureError(HarnessError):
    """Docker, an image or a container that the run needs is missing or broken."""


class PreflightError(HarnessError):
    """The machine lacks something a scenario needs, such as a kernel feature."""
