"""Agent self-update: A/B virtual-environment slots, a trial of the new agent, and the guard that
brings the previous slot back when the new agent does not come up and report (like Mender's
A/B root file systems with U-Boot's boot count).

``layout``     the install root: ``slots/{a,b}``, the ``current`` and ``confirmed`` links, state files
``trial``      the pure rules: the trial record and what a (re)start of the service does with it
``guard``      ``edgefleet-agent-guard``: starts the agent, counts starts, enforces the report deadline
``bundle``     what an agent release carries: a wheel of the ``edgefleet`` distribution
``installer``  installs a wheel into the other slot (offline: dependencies cloned from the running slot)
``manager``    the install and health-check steps a deployment of an agent release runs

Only the standard library: the guard starts in a fraction of a second and never imports numpy.
"""
