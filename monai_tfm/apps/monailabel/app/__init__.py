# Copyright (c) monai_tfm contributors. Licensed under the Apache License, Version 2.0.
"""The MONAI Label app folder (``monailabel start_server --app <this folder>``); the server loads ``main.py``."""
