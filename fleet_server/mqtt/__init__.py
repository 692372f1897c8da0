"""MQTT: the bridge to devices (paho-mqtt) and the optional embedded broker (amqtt)."""
