/**
 * The emulator's in-memory model: hubs, their connections, groups, user-group memberships and
 * the roles (permissions) a connection holds. Transport-free: WebSocket connections implement
 * {@link EmulatedConnection}, the REST API and the client protocols both work on this model.
 */
import type { UserEventDataType } from './web-pubsub.protocol.js';

/** A message on its way to a client. `data` holds UTF-8 text, JSON text or raw bytes. */
export interface OutboundMessage {
  from: 'server' | 'group';
  group?: string;
  fromUserId?: string;
  dataType: UserEventDataType;
  data: Buffer;
}

export type Permission = 'joinLeaveGroup' | 'sendToGroup';

export const PERMISSIONS: readonly Permission[] = ['joinLeaveGroup', 'sendToGroup'];

/** What the hub model needs from a client connection. */
export interface EmulatedConnection {
  readonly id: string;
  readonly hub: Hub;
  readonly userId: string | undefined;
  readonly groups: Set<string>;
  readonly roles: Set<string>;
  deliver(message: OutboundMessage): void;
  /** Server-initiated close: tells the client why, then ends the socket. */
  close(reason: string): void;
}

/** The fields an OData filter can test. */
export interface FilterableConnection {
  readonly id: string;
  readonly userId: string | undefined;
  readonly groups: ReadonlySet<string>;
}

const HUB_PATTERN = /^[A-Za-z][A-Za-z0-9_`,.[\]]{0,127}$/;

export const isValidHubName = (name: string): boolean => HUB_PATTERN.test(name);

export const isValidGroupName = (name: string): boolean =>
  name.length > 0 && name.length <= 1024 && name.trim().length > 0;

export class Hub {
  readonly connections = new Map<string, EmulatedConnection>();
  private readonly groupMembers = new Map<string, Set<EmulatedConnection>>();
  /** Groups a user was added to through the REST API: the user's later connections join them too. */
  private readonly userGroups = new Map<string, Set<string>>();

  constructor(readonly name: string) {}

  add(connection: EmulatedConnection): void {
    this.connections.set(connection.id, connection);
    if (connection.userId !== undefined) {
      for (const group of this.userGroups.get(connection.userId) ?? [])
        this.join(connection, group);
    }
  }

  remove(connection: EmulatedConnection): void {
    if (this.connections.get(connection.id) !== connection) return;
    this.connections.delete(connection.id);
    for (const group of connection.groups) this.leave(connection, group);
  }

  join(connection: EmulatedConnection, group: string): void {
    connection.groups.add(group);
    let members = this.groupMembers.get(group);
    if (!members) this.groupMembers.set(group, (members = new Set()));
    members.add(connection);
  }

  leave(connection: EmulatedConnection, group: string): void {
    connection.groups.delete(group);
    const members = this.groupMembers.get(group);
    if (!members) return;
    members.delete(connection);
    if (members.size === 0) this.groupMembers.delete(group);
  }

  groupConnections(group: string): EmulatedConnection[] {
    return [...(this.groupMembers.get(group) ?? [])];
  }

  groupExists(group: string): boolean {
    return (this.groupMembers.get(group)?.size ?? 0) > 0;
  }

  userConnections(userId: string): EmulatedConnection[] {
    return [...this.connections.values()].filter((c) => c.userId === userId);
  }

  addUserToGroup(userId: string, group: string): void {
    let groups = this.userGroups.get(userId);
    if (!groups) this.userGroups.set(userId, (groups = new Set()));
    groups.add(group);
    for (const connection of this.userConnections(userId)) this.join(connection, group);
  }

  removeUserFromGroup(userId: string, group: string): void {
    this.userGroups.get(userId)?.delete(group);
    for (const connection of this.userConnections(userId)) this.leave(connection, group);
  }

  removeUserFromAllGroups(userId: string): void {
    this.userGroups.delete(userId);
    for (const connection of this.userConnections(userId)) {
      for (const group of connection.groups) this.leave(connection, group);
    }
  }
}

/** Hub names are case-insensitive: `Chat` and `chat` are one hub. */
export class HubRegistry {
  private readonly hubs = new Map<string, Hub>();

  get(name: string): Hub {
    const key = name.toLowerCase();
    let hub = this.hubs.get(key);
    if (!hub) this.hubs.set(key, (hub = new Hub(name)));
    return hub;
  }

  /** The hub if it exists, without creating it. */
  find(name: string): Hub | undefined {
    return this.hubs.get(name.toLowerCase());
  }

  all(): Hub[] {
    return [...this.hubs.values()];
  }
}

// ---------------------------------------------------------------------------------------------
// Roles

/** `*` stays within one dot-separated segment, `**` crosses segments, `?` is one non-dot character. */
function wildcardToRegExp(pattern: string): RegExp {
  let source = '';
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i]!;
    if (char === '*' && pattern[i + 1] === '*') {
      source += '.*';
      i++;
    } else if (char === '*') source += '[^.]*';
    else if (char === '?') source += '[^.]';
    else source += char.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${source}$`);
}

/**
 * Whether the roles allow the permission: for every group (`webpubsub.sendToGroup`), for one group
 * (`webpubsub.sendToGroup.<group>`) or for groups matching a pattern
 * (`webpubsub.sendToGroups.<pattern>`). Without a group, only the role for every group counts.
 */
export function hasPermission(
  roles: ReadonlySet<string>,
  permission: Permission,
  group?: string,
): boolean {
  const all = `webpubsub.${permission}`;
  if (roles.has(all)) return true;
  if (group === undefined) return false;
  if (roles.has(`${all}.${group}`)) return true;
  const patternPrefix = `webpubsub.${permission}s.`;
  for (const role of roles) {
    if (
      role.startsWith(patternPrefix) &&
      wildcardToRegExp(role.slice(patternPrefix.length)).test(group)
    ) {
      return true;
    }
  }
  return false;
}

/** The role string a REST permission grant adds or removes. */
export const permissionRole = (permission: Permission, targetName?: string): string =>
  targetName ? `webpubsub.${permission}.${targetName}` : `webpubsub.${permission}`;
