"""The client's resources, one module each (private: use them through :class:`pps_client.Client`)."""
