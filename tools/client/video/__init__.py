"""Videos, cameras and streams through a tier over one gRPC stream each, results in frame order."""
