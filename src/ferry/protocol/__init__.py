"""The Open Inference Protocol's wire forms, shared by the server and the client.

`datatypes.py` maps OIP datatypes to numpy, `tensors.py` turns wire data (raw bytes, JSON values, gRPC
typed contents) into arrays and back, and `messages.py` holds the gRPC message classes. Nothing here
imports the server's libraries, so `ferry.client` loads without them.
"""
