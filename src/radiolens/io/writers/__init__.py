"""Writers of what radiolens produces for people and other systems (display images, overlays, ...)."""
