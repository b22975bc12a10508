"""The client side: requests, auth and results (`people`), images and videos through a tier.

Imports only `pipelines.spec` and tritonclient: any machine that can reach the server can use it.
"""
