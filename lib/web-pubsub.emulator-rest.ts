/**
 * The data-plane REST API (api-version 2024-12-01) as `@azure/web-pubsub` calls it: bearer JWT
 * signed with an access key, raw message bodies, ErrorDetail JSON on failure.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { jwtVerify, SignJWT, type JWTPayload } from 'jose';
import type { EmulatorLog } from './web-pubsub.emulator.js';
import { compileFilter, FilterError, type ConnectionFilter } from './web-pubsub.emulator-filter.js';
import {
  hasPermission,
  isValidGroupName,
  isValidHubName,
  PERMISSIONS,
  permissionRole,
  type EmulatedConnection,
  type Hub,
  type HubRegistry,
  type OutboundMessage,
  type Permission,
} from './web-pubsub.emulator-hubs.js';
import { MAX_BODY_SIZE, mediaType } from './web-pubsub.protocol.js';

/**
 * Verifies an HS256 token against each access key in turn (either key may sign). `exp` is
 * required; `audienceMatches` decides about `aud`.
 */
export async function verifyAccessToken(
  token: string,
  keys: readonly Uint8Array[],
  audienceMatches: (aud: string) => boolean,
): Promise<JWTPayload | undefined> {
  for (const key of keys) {
    try {
      const { payload } = await jwtVerify(token, key, {
        algorithms: ['HS256'],
        requiredClaims: ['exp'],
      });
      const audiences = Array.isArray(payload.aud) ? payload.aud : [payload.aud ?? ''];
      return audiences.some(audienceMatches) ? payload : undefined;
    } catch {
      // Try the other key.
    }
  }
  return undefined;
}

export const bearerToken = (header: string | undefined): string | undefined =>
  /^Bearer\s+(\S+)$/i.exec(header ?? '')?.[1];

/** A REST failure with the service's ErrorDetail shape. */
class RestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const MAX_PAGE_SIZE = 200;
const DEFAULT_PAGE_SIZE = 100;

export interface RestApiContext {
  hubs: HubRegistry;
  keys: readonly Uint8Array[];
  primaryKey: string;
  /** The emulator's http URL without a trailing slash, for client token audiences. */
  baseUrl: string;
  log: EmulatorLog;
}

interface RestRequest {
  method: string;
  url: URL;
  hub: Hub;
  /** Path segments after `/api/hubs/{hub}/`, percent-decoded. */
  segments: string[];
  body: Buffer;
  contentType: string | undefined;
}

export class RestApi {
  constructor(private readonly context: RestApiContext) {}

  /** Handles one request under `/api/`. Never throws. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    let url: URL;
    try {
      // The token's audience names the host the client used: rebuild the URL with it.
      url = new URL(req.url ?? '/', `http://${req.headers.host ?? 'localhost'}`);
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('Malformed request URL or Host');
      return;
    }
    let status: number;
    try {
      status = await this.route(req, res, method, url);
    } catch (err) {
      if (err instanceof RestError) {
        status = err.status;
        sendError(res, err);
      } else {
        status = 500;
        this.context.log.error(`REST ${method} ${url.pathname} failed: ${String(err)}`);
        sendError(
          res,
          new RestError(500, 'InternalServerError', 'The emulator failed to handle the request'),
        );
      }
    }
    this.context.log.debug(`REST ${method} ${url.pathname}${url.search} → ${status}`);
  }

  private async route(
    req: IncomingMessage,
    res: ServerResponse,
    method: string,
    url: URL,
  ): Promise<number> {
    const raw = url.pathname.split('/').slice(1);
    if (raw[0] === 'api' && raw[1] === 'health' && raw.length === 2) {
      return reply(res, 200);
    }
    if (raw[0] !== 'api' || raw[1] !== 'hubs' || raw.length < 4) {
      throw new RestError(404, 'NotFound', `No API at ${url.pathname}`);
    }
    await this.authenticate(req, url);
    const [hubName, ...segments] = raw.slice(2).map(decodeSegment);
    if (!isValidHubName(hubName!)) {
      throw new RestError(400, 'InvalidParam', `Invalid hub name "${hubName}"`);
    }
    const body = await readBody(req);
    const request: RestRequest = {
      method,
      url,
      hub: this.context.hubs.get(hubName!),
      segments,
      body,
      contentType: req.headers['content-type'],
    };
    // Variable segments (ids, names) sit at odd positions: `users/{u}/groups/{g}`.
    const shape = segments.map((s, i) => (i % 2 === 1 ? '*' : s)).join('/');
    return this.dispatch(`${method} ${shape}`, request, res);
  }

  private async authenticate(req: IncomingMessage, url: URL): Promise<void> {
    const token = bearerToken(req.headers.authorization);
    if (!token) throw new RestError(401, 'Unauthorized', 'Missing bearer token');
    const path = url.pathname.toLowerCase();
    const payload = await verifyAccessToken(token, this.context.keys, (aud) => {
      if (aud === url.href) return true;
      try {
        return new URL(aud).pathname.toLowerCase() === path;
      } catch {
        return false;
      }
    });
    if (!payload) {
      throw new RestError(401, 'Unauthorized', 'Invalid, expired or misaddressed bearer token');
    }
  }

  private async dispatch(route: string, r: RestRequest, res: ServerResponse): Promise<number> {
    const { hub, segments, url } = r;
    const id = segments[1]!;
    const sub = segments[3]!;
    switch (route) {
      case 'POST :send':
        return this.send(res, r, hub.connections.values(), true);
      case 'POST users/*/:send':
        return this.send(res, r, hub.userConnections(id), false);
      case 'POST connections/*/:send': {
        const connection = hub.connections.get(id);
        return this.send(res, r, connection ? [connection] : [], false);
      }
      case 'POST groups/*/:send':
        requireGroupName(id);
        return this.send(res, r, hub.groupConnections(id), true, id);
      case 'HEAD connections/*':
        return reply(res, hub.connections.has(id) ? 200 : 404);
      case 'HEAD users/*':
        return reply(res, hub.userConnections(id).length > 0 ? 200 : 404);
      case 'HEAD groups/*':
        return reply(res, hub.groupExists(id) ? 200 : 404);
      case 'DELETE connections/*':
        hub.connections.get(id)?.close(url.searchParams.get('reason') ?? '');
        return reply(res, 204);
      case 'POST :closeConnections':
        return closeAll(res, url, [...hub.connections.values()]);
      case 'POST users/*/:closeConnections':
        return closeAll(res, url, hub.userConnections(id));
      case 'POST groups/*/:closeConnections':
        requireGroupName(id);
        return closeAll(res, url, hub.groupConnections(id));
      case 'DELETE connections/*/groups': {
        const connection = hub.connections.get(id);
        if (connection) for (const group of connection.groups) hub.leave(connection, group);
        return reply(res, 204);
      }
      case 'DELETE users/*/groups':
        hub.removeUserFromAllGroups(id);
        return reply(res, 204);
      case 'PUT groups/*/connections/*': {
        requireGroupName(id);
        const connection = hub.connections.get(sub);
        if (!connection) throw new RestError(404, 'NotFound', `Connection "${sub}" does not exist`);
        hub.join(connection, id);
        return reply(res, 200);
      }
      case 'DELETE groups/*/connections/*': {
        requireGroupName(id);
        const connection = hub.connections.get(sub);
        if (connection) hub.leave(connection, id);
        return reply(res, 204);
      }
      case 'PUT users/*/groups/*':
        requireGroupName(sub);
        hub.addUserToGroup(id, sub);
        return reply(res, 200);
      case 'DELETE users/*/groups/*':
        requireGroupName(sub);
        hub.removeUserFromGroup(id, sub);
        return reply(res, 204);
      case 'GET groups/*/connections':
        requireGroupName(id);
        return this.listGroupConnections(res, r, id);
      case 'POST :addToGroups':
      case 'POST :removeFromGroups':
        return this.changeGroups(res, r, segments[0] === ':addToGroups');
      case 'PUT permissions/*/connections/*':
      case 'DELETE permissions/*/connections/*':
      case 'HEAD permissions/*/connections/*':
        return this.permission(res, r, id, sub);
      case 'POST :generateToken':
        return this.generateToken(res, r);
      default:
        throw new RestError(404, 'NotFound', `No API for ${r.method} ${url.pathname}`);
    }
  }

  private send(
    res: ServerResponse,
    r: RestRequest,
    targets: Iterable<EmulatedConnection>,
    allowExcluded: boolean,
    group?: string,
  ): number {
    const excluded = new Set(allowExcluded ? r.url.searchParams.getAll('excluded') : []);
    const filter = parseFilter(r.url.searchParams.get('filter'));
    const message = toMessage(r.contentType, r.body, group);
    let count = 0;
    for (const connection of targets) {
      if (excluded.has(connection.id) || (filter && !filter(connection))) continue;
      connection.deliver(message);
      count++;
    }
    this.context.log.debug(
      `REST send (${message.dataType}, ${message.data.length} bytes) to ${count} connection(s)`,
    );
    return reply(res, 202);
  }

  private listGroupConnections(res: ServerResponse, r: RestRequest, group: string): number {
    const params = r.url.searchParams;
    const pageSize = intParam(params, 'maxpagesize', DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE);
    const top = params.has('top')
      ? intParam(params, 'top', 0, 1, Number.MAX_SAFE_INTEGER)
      : undefined;
    const offset = intParam(params, 'continuationToken', 0, 0, Number.MAX_SAFE_INTEGER);
    // A stable order, so the continuation token (an offset) stays meaningful between pages.
    const members = r.hub.groupConnections(group);
    // oxlint-disable-next-line unicorn/no-array-sort -- a fresh array, sorted in place
    members.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const count = Math.min(pageSize, top ?? Infinity);
    const page = members.slice(offset, offset + count);
    const value = page.map((c) =>
      c.userId === undefined ? { connectionId: c.id } : { connectionId: c.id, userId: c.userId },
    );
    const remaining = top === undefined ? undefined : top - page.length;
    const next = offset + page.length;
    let nextLink: string | undefined;
    if (next < members.length && remaining !== 0 && page.length > 0) {
      const query = new URLSearchParams({
        'api-version': params.get('api-version') ?? '2024-12-01',
        maxpagesize: String(pageSize),
        continuationToken: String(next),
      });
      if (remaining !== undefined) query.set('top', String(remaining));
      nextLink = `${r.url.pathname}?${query}`;
    }
    return replyJson(res, 200, nextLink ? { value, nextLink } : { value });
  }

  private changeGroups(res: ServerResponse, r: RestRequest, add: boolean): number {
    let body: unknown;
    try {
      body = JSON.parse(r.body.toString('utf8'));
    } catch {
      throw new RestError(
        400,
        'InvalidParam',
        'The body must be JSON {"groups": [...], "filter": "..."}',
      );
    }
    const { groups, filter } = (body ?? {}) as { groups?: unknown; filter?: unknown };
    if (
      !Array.isArray(groups) ||
      !groups.every((g) => typeof g === 'string' && isValidGroupName(g))
    ) {
      throw new RestError(400, 'InvalidParam', '"groups" must be a list of group names');
    }
    if (typeof filter !== 'string' || !filter.trim()) {
      throw new RestError(400, 'InvalidParam', '"filter" is required');
    }
    const match = parseFilter(filter)!;
    for (const connection of r.hub.connections.values()) {
      if (!match(connection)) continue;
      for (const group of groups as string[]) {
        if (add) r.hub.join(connection, group);
        else r.hub.leave(connection, group);
      }
    }
    return reply(res, 200);
  }

  private permission(
    res: ServerResponse,
    r: RestRequest,
    name: string,
    connectionId: string,
  ): number {
    if (!PERMISSIONS.includes(name as Permission)) {
      throw new RestError(
        400,
        'InvalidParam',
        `Unknown permission "${name}" (joinLeaveGroup or sendToGroup)`,
      );
    }
    const permission = name as Permission;
    const targetName = r.url.searchParams.get('targetName') || undefined;
    const connection = r.hub.connections.get(connectionId);
    switch (r.method) {
      case 'HEAD':
        return reply(
          res,
          connection && hasPermission(connection.roles, permission, targetName) ? 200 : 404,
        );
      case 'PUT':
        if (!connection) {
          throw new RestError(404, 'NotFound', `Connection "${connectionId}" does not exist`);
        }
        connection.roles.add(permissionRole(permission, targetName));
        return reply(res, 200);
      default:
        connection?.roles.delete(permissionRole(permission, targetName));
        return reply(res, 204);
    }
  }

  private async generateToken(res: ServerResponse, r: RestRequest): Promise<number> {
    const params = r.url.searchParams;
    const minutes = intParam(params, 'minutesToExpire', 60, 1, 60 * 24 * 365);
    const claims: JWTPayload = {};
    const roles = params.getAll('role');
    const groups = params.getAll('group');
    if (roles.length) claims.role = roles;
    if (groups.length) claims['webpubsub.group'] = groups;
    let jwt = new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuedAt()
      .setExpirationTime(`${minutes}m`)
      .setAudience(`${this.context.baseUrl}/client/hubs/${r.hub.name}`);
    const userId = params.get('userId');
    if (userId) jwt = jwt.setSubject(userId);
    const token = await jwt.sign(new TextEncoder().encode(this.context.primaryKey));
    return replyJson(res, 200, { token });
  }
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new RestError(400, 'InvalidParam', `Malformed path segment "${segment}"`);
  }
}

function requireGroupName(group: string): void {
  if (!isValidGroupName(group))
    throw new RestError(400, 'InvalidParam', `Invalid group name "${group}"`);
}

function parseFilter(filter: string | null): ConnectionFilter | undefined {
  if (filter === null || filter === '') return undefined;
  try {
    return compileFilter(filter);
  } catch (err) {
    if (err instanceof FilterError) {
      throw new RestError(400, 'InvalidParam', `Unsupported filter "${filter}": ${err.message}`);
    }
    throw err;
  }
}

function intParam(
  params: URLSearchParams,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = params.get(name);
  if (raw === null) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RestError(400, 'InvalidParam', `"${name}" must be an integer from ${min} to ${max}`);
  }
  return value;
}

/** The SDK sends text as text/plain, objects as application/json, bytes as octet-stream. */
function toMessage(contentType: string | undefined, body: Buffer, group?: string): OutboundMessage {
  const type = mediaType(contentType);
  const from = group === undefined ? 'server' : 'group';
  if (type === 'application/json' || type.endsWith('+json')) {
    try {
      JSON.parse(body.toString('utf8'));
    } catch {
      throw new RestError(
        400,
        'InvalidParam',
        'The message is declared application/json but is not JSON',
      );
    }
    return { from, group, dataType: 'json', data: body };
  }
  if (type.startsWith('text/')) return { from, group, dataType: 'text', data: body };
  return { from, group, dataType: 'binary', data: body };
}

function closeAll(res: ServerResponse, url: URL, targets: EmulatedConnection[]): number {
  const excluded = new Set(url.searchParams.getAll('excluded'));
  const reason = url.searchParams.get('reason') ?? '';
  for (const connection of targets) if (!excluded.has(connection.id)) connection.close(reason);
  return reply(res, 204);
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_SIZE) {
      throw new RestError(413, 'PayloadTooLarge', `The body is larger than ${MAX_BODY_SIZE} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function reply(res: ServerResponse, status: number): number {
  res.writeHead(status, { 'content-length': '0' }).end();
  return status;
}

function replyJson(res: ServerResponse, status: number, body: unknown): number {
  const text = JSON.stringify(body);
  res
    .writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(Buffer.byteLength(text)),
    })
    .end(text);
  return status;
}

function sendError(res: ServerResponse, err: RestError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.setHeader('x-ms-error-code', err.code);
  replyJson(res, err.status, { code: err.code, message: err.message });
}
