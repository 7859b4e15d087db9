export * from "./settings";
export * from "./stackConfig";
export * from "./postgresCluster";
export * from "./postgresNode";
export * from "./replicationSlot";
export * from "./replicationCheck";
export * from "./assets";
