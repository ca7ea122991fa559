-- One database per service, as deploy/mesh makes them (there: <prefix>_chat, _segments, _events).
CREATE DATABASE IF NOT EXISTS chatmesh_chat CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS chatmesh_segments CHARACTER SET utf8mb4;
CREATE DATABASE IF NOT EXISTS chatmesh_events CHARACTER SET utf8mb4;
