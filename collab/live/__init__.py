"""The live part: the y-websocket protocol, connections, rooms, presence and the node bus."""
