"""Server logic, independent of HTTP and MQTT: routes and the bridge call into these."""
