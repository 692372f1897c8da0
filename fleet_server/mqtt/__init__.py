"""MQTT: the bridge to devices (its own 3.1.1 consumer, paho for directives) and the embedded broker (amqtt)."""
