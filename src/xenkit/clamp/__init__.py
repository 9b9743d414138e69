"""Host-wide idle floors for Xen's credit1 scheduler (the seed's PowerClamp project).

``xenkit.clamp.sim`` is a discrete-event model of credit1 as it is in Xen 4.17,
with the in-hypervisor designs the project asks about, so that they can be
compared before anyone touches ``credit.c``; ``xenkit.clamp.scenarios`` names
the workloads used for that comparison and for validating the model on a real
host.
"""
