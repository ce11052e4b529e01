"""Post-deployment monitoring: the input gate in front of the model and drift tests behind it.

Sits between the model layers and the service: it knows models and images, not HTTP or databases.
"""

from radiolens.monitor.alerts import CLEARED, RAISED, AlertTracker, AlertTransition
from radiolens.monitor.config import DriftConfig, GateConfig, MonitorConfig, load_monitor_config
from radiolens.monitor.drift import WindowReport, evaluate_window
from radiolens.monitor.gate import OK, OUT_OF_DISTRIBUTION, FeatureDensity, GateResult, InputGate
from radiolens.monitor.profile import MonitoringProfile, build_profile, register

__all__ = [
    "CLEARED", "RAISED", "AlertTracker", "AlertTransition", "DriftConfig", "GateConfig", "MonitorConfig",
    "load_monitor_config", "WindowReport", "evaluate_window", "OK", "OUT_OF_DISTRIBUTION", "FeatureDensity",
    "GateResult", "InputGate", "MonitoringProfile", "build_profile", "register",
]
