"""radiolens: chest X-ray AI from DICOM to a validated, explainable, monitored prediction.

Advisory only: radiolens is decision support for qualified readers, never a diagnosis.
"""

__version__ = "0.1.0"
