/**
 * WebSocket clients at `/client/hubs/{hub}`: the handshake (token, subprotocol, blocking
 * `connect` event), the simple, `json.webpubsub.azure.v1` and `json.reliable.webpubsub.azure.v1`
 * protocols, user events with their replies, and recovery of reliable connections.
 */
import { randomBytes } from 'node:crypto';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import type { EmulatorLog } from './web-pubsub.emulator.js';
import {
  hasPermission,
  isValidGroupName,
  isValidHubName,
  type EmulatedConnection,
  type Hub,
  type HubRegistry,
  type OutboundMessage,
} from './web-pubsub.emulator-hubs.js';
import { bearerToken, verifyAccessToken } from './web-pubsub.emulator-rest.js';
import {
  errorText,
  type UpstreamDispatcher,
  type UpstreamEvent,
  type UpstreamResponse,
} from './web-pubsub.emulator-upstream.js';
import { CeHeaders, mediaType, type UserEventDataType } from './web-pubsub.protocol.js';

/** How many successful ack ids a connection remembers for Duplicate answers. */
const ACK_ID_MEMORY = 10_000;

export const JSON_SUBPROTOCOL = 'json.webpubsub.azure.v1';
export const RELIABLE_SUBPROTOCOL = 'json.reliable.webpubsub.azure.v1';

type ClientKind = 'simple' | 'json' | 'reliable';

/** The service keeps a dropped reliable connection this long for the client to come back. */
const RECOVERY_WINDOW_MS = 30_000;
/** More unacknowledged messages than this close a reliable connection, as the service does. */
const MAX_UNACKED_MESSAGES = 1000;
/** Microsoft's emulator keeps at most 1000 unacknowledged messages or 16 MiB. */
const MAX_UNACKED_BYTES = 16 * 1024 * 1024;
/** Events of one connection waiting for the event handler; a client past it is flooding. */
const MAX_QUEUED_EVENTS = 1000;
const MAX_FRAME_BYTES = 16 * 1024 * 1024;
const SYSTEM_CONTENT_TYPE = 'application/json; charset=utf-8';

/** WebSocket close codes. */
const Close = {
  normal: 1000,
  goingAway: 1001,
  invalidData: 1007,
  policy: 1008,
  internalError: 1011,
} as const;

const CONTENT_TYPES: Record<UserEventDataType, string> = {
  text: 'text/plain',
  json: 'application/json',
  binary: 'application/octet-stream',
};

export interface ClientEndpointContext {
  hubs: HubRegistry;
  upstream: UpstreamDispatcher;
  keys: readonly Uint8Array[];
  log: EmulatorLog;
}

/** A frame the JSON protocols cannot accept: the connection is closed with 1007. */
class InvalidFrameError extends Error {}

export class ClientEndpoint {
  readonly connections = new Set<ClientConnection>();
  closing = false;
  private readonly handshakes = new Set<Duplex>();
  private readonly chosenProtocols = new WeakMap<IncomingMessage, string | false>();
  private readonly wss: WebSocketServer;

  constructor(readonly context: ClientEndpointContext) {
    this.wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: MAX_FRAME_BYTES,
      handleProtocols: (_offered, req) => this.chosenProtocols.get(req) ?? false,
    });
  }

  get log(): EmulatorLog {
    return this.context.log;
  }

  /** The HTTP server's `upgrade` event. Never throws; a failed handshake gets an HTTP status. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.handshakes.add(socket);
    socket.on('error', (err) => this.log.debug(`Client socket error: ${err.message}`));
    socket.once('close', () => this.handshakes.delete(socket));
    this.upgrade(req, socket, head).catch((err: unknown) => {
      this.log.error(`WebSocket handshake failed: ${errorText(err)}`);
      reject(socket, 500, 'The emulator failed to handle the handshake');
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const socket of this.handshakes) socket.destroy();
    const sockets = [...this.connections].flatMap((c) => (c.socket ? [c.socket] : []));
    for (const connection of this.connections) {
      connection.close('The emulator is shutting down', Close.goingAway);
    }
    // Give clients a moment to answer the close frame, then cut what is left.
    await Promise.race([
      Promise.all(sockets.map((ws) => new Promise((resolve) => ws.once('close', resolve)))),
      new Promise((resolve) => setTimeout(resolve, 200).unref()),
    ]);
    for (const ws of sockets) ws.terminate();
    this.wss.close();
  }

  private async upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const match = /^\/client\/hubs\/([^/]+)\/?$/i.exec(url.pathname);
    if (!match) return reject(socket, 404, `No WebSocket endpoint at ${url.pathname}`);
    const hubName = safeDecode(match[1]!);
    if (!hubName || !isValidHubName(hubName)) return reject(socket, 400, 'Invalid hub name');
    const offered = (req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean);

    const recoverId = url.searchParams.get('awps_connection_id');
    const recoverToken = url.searchParams.get('awps_reconnection_token');
    if (recoverId && recoverToken) {
      // Looked up, never created: refused handshakes must not leave hubs behind.
      const known = this.context.hubs.find(hubName);
      return this.recover(req, socket, head, known, recoverId, recoverToken, offered);
    }

    const token = url.searchParams.get('access_token') ?? bearerToken(req.headers.authorization);
    const audiencePath = `/client/hubs/${hubName}`.toLowerCase();
    const claims = token
      ? await verifyAccessToken(token, this.context.keys, (aud) => {
          try {
            return new URL(aud).pathname.toLowerCase().endsWith(audiencePath);
          } catch {
            return false;
          }
        })
      : undefined;
    if (!claims) {
      this.log.debug(`Handshake to hub ${hubName} refused: ${token ? 'invalid' : 'missing'} token`);
      return reject(socket, 401, 'Missing, invalid or expired access token');
    }
    const hub = this.context.hubs.get(hubName);

    const id = randomBytes(16).toString('base64url');
    let subprotocol: string | undefined = offered.find(
      (p) => p === JSON_SUBPROTOCOL || p === RELIABLE_SUBPROTOCOL,
    );
    let userId = typeof claims.sub === 'string' && claims.sub ? claims.sub : undefined;
    let roles = stringList(claims.role);
    const groups = new Set(stringList(claims['webpubsub.group']));
    let connectionState: string | undefined;
    const sendToGroup =
      url.searchParams.get('webpubsub_mode') === 'sendToGroup'
        ? {
            group: url.searchParams.get('group') ?? '',
            noEcho: url.searchParams.get('noEcho') === 'true',
          }
        : undefined;
    if (sendToGroup && !isValidGroupName(sendToGroup.group)) {
      return reject(socket, 400, 'webpubsub_mode=sendToGroup needs a valid "group"');
    }

    const setting = this.context.upstream.findHandler(hubName, 'system', 'connect');
    if (setting) {
      const body = {
        claims: Object.fromEntries(
          Object.entries(claims).map(([k, v]) => [k, stringList(v, true)]),
        ),
        query: groupEntries([...url.searchParams].filter(([k]) => k !== 'access_token')),
        headers: groupEntries(
          headerPairs(req).filter(([k]) => k.toLowerCase() !== 'authorization'),
        ),
        subprotocols: offered,
        clientCertificates: [],
      };
      let response: UpstreamResponse;
      try {
        response = await this.context.upstream.deliver(setting, {
          hub: hubName,
          connectionId: id,
          eventId: 0,
          kind: 'system',
          eventName: 'connect',
          userId,
          contentType: SYSTEM_CONTENT_TYPE,
          body: Buffer.from(JSON.stringify(body)),
        });
      } catch (err) {
        if (!this.closing)
          this.log.error(`Connect event failed, handshake refused: ${errorText(err)}`);
        return reject(socket, 500, 'The connect event could not be delivered');
      }
      if (this.closing) return reject(socket, 503, 'The emulator is shutting down');
      if (response.status < 200 || response.status > 299) {
        const status = response.status >= 400 && response.status < 500 ? response.status : 500;
        this.log.debug(`Connect refused by the event handler (${response.status})`);
        return reject(socket, status, response.body.toString('utf8'));
      }
      let accepted: unknown = {};
      const text = response.body.toString('utf8').trim();
      if (text) {
        try {
          accepted = JSON.parse(text);
        } catch {
          this.log.error(`Connect response is not JSON: ${text.slice(0, 200)}`);
          return reject(socket, 500, 'The connect response is not JSON');
        }
      }
      const overrides = (accepted ?? {}) as Record<string, unknown>;
      if (typeof overrides.userId === 'string') userId = overrides.userId || undefined;
      if (Array.isArray(overrides.roles)) roles = stringList(overrides.roles);
      if (Array.isArray(overrides.groups))
        for (const g of stringList(overrides.groups)) groups.add(g);
      if (typeof overrides.subprotocol === 'string' && overrides.subprotocol) {
        if (!offered.includes(overrides.subprotocol)) {
          this.log.error(
            `Connect response chose subprotocol "${overrides.subprotocol}", not offered`,
          );
          return reject(
            socket,
            500,
            'The connect response chose a subprotocol the client did not offer',
          );
        }
        subprotocol = overrides.subprotocol;
      }
      if (response.headers.has(CeHeaders.connectionState)) {
        connectionState = response.headers.get(CeHeaders.connectionState) || undefined;
      }
    }
    if (socket.destroyed) return;

    this.chosenProtocols.set(req, subprotocol ?? false);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.handshakes.delete(socket);
      if (this.closing) return ws.terminate();
      const connection = new ClientConnection(this, {
        id,
        hub,
        hubName,
        userId,
        roles: new Set(roles),
        subprotocol,
        connectionState,
        sendToGroup,
      });
      this.connections.add(connection);
      connection.open(ws, groups);
    });
  }

  private async recover(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    hub: Hub | undefined,
    connectionId: string,
    reconnectionToken: string,
    offered: string[],
  ): Promise<void> {
    const connection = hub?.connections.get(connectionId);
    const recoverable =
      connection instanceof ClientConnection &&
      connection.kind === 'reliable' &&
      connection.reconnectionToken === reconnectionToken;
    this.chosenProtocols.set(req, recoverable ? RELIABLE_SUBPROTOCOL : (offered[0] ?? false));
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.handshakes.delete(socket);
      if (recoverable && !this.closing) {
        this.log.debug(`Connection ${connectionId} recovered`);
        connection.reattach(ws);
      } else {
        // 1008 tells the client SDK to stop recovering and start a new connection.
        this.log.debug(`Recovery of connection ${connectionId} refused`);
        ws.close(Close.policy, 'The connection cannot be recovered');
      }
    });
  }
}

interface ConnectionInit {
  id: string;
  hub: Hub;
  hubName: string;
  userId: string | undefined;
  roles: Set<string>;
  subprotocol: string | undefined;
  connectionState: string | undefined;
  sendToGroup: { group: string; noEcho: boolean } | undefined;
}

type EventOutcome = { ok: true; reply?: OutboundMessage } | { ok: false; reason: string };

/** JSON frame bodies per message, built once however many clients receive it. */
const frameCache = new WeakMap<OutboundMessage, string>();

function messageFrame(message: OutboundMessage): string {
  let frame = frameCache.get(message);
  if (frame === undefined) {
    // JSON data was validated where it entered the emulator, so it is embedded as it is.
    const data =
      message.dataType === 'json'
        ? message.data.toString('utf8')
        : JSON.stringify(message.data.toString(message.dataType === 'binary' ? 'base64' : 'utf8'));
    const head =
      message.from === 'group'
        ? `{"type":"message","from":"group","group":${JSON.stringify(message.group)},` +
          `"fromUserId":${JSON.stringify(message.fromUserId ?? null)},`
        : `{"type":"message","from":"server",`;
    frame = `${head}"dataType":"${message.dataType}","data":${data}}`;
    frameCache.set(message, frame);
  }
  return frame;
}

export class ClientConnection implements EmulatedConnection {
  readonly id: string;
  readonly hub: Hub;
  readonly kind: ClientKind;
  readonly groups = new Set<string>();
  readonly roles: Set<string>;
  readonly reconnectionToken: string | undefined;
  userId: string | undefined;
  socket: WebSocket | undefined;
  private readonly hubName: string;
  private readonly subprotocol: string | undefined;
  private readonly sendToGroupMode: ConnectionInit['sendToGroup'];
  private connectionState: string | undefined;
  private nextEventId = 1;
  private upstreamQueue: Promise<unknown> = Promise.resolve();
  private sequenceId = 0;
  private unacked: Array<{ sequenceId: number; frame: string }> = [];
  private unackedBytes = 0;
  private queuedEvents = 0;
  /** Recent successful ack ids, for Duplicate answers; the oldest are forgotten past a bound. */
  private readonly succeededAckIds = new Set<number>();
  private ended = false;
  private recoveryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly endpoint: ClientEndpoint,
    init: ConnectionInit,
  ) {
    this.id = init.id;
    this.hub = init.hub;
    this.hubName = init.hubName;
    this.userId = init.userId;
    this.roles = init.roles;
    this.subprotocol = init.subprotocol;
    this.connectionState = init.connectionState;
    this.sendToGroupMode = init.sendToGroup;
    this.kind =
      init.subprotocol === RELIABLE_SUBPROTOCOL
        ? 'reliable'
        : init.subprotocol === JSON_SUBPROTOCOL
          ? 'json'
          : 'simple';
    this.reconnectionToken =
      this.kind === 'reliable' ? randomBytes(24).toString('base64url') : undefined;
  }

  private get log(): EmulatorLog {
    return this.endpoint.log;
  }

  open(ws: WebSocket, groups: Iterable<string>): void {
    this.hub.add(this);
    for (const group of groups) this.hub.join(this, group);
    this.attach(ws);
    this.log.debug(
      `Client ${this.id} connected to hub ${this.hubName} (${this.subprotocol ?? 'simple'}` +
        `${this.userId === undefined ? '' : `, user ${this.userId}`})`,
    );
    this.sendSystemEvent('connected', {});
  }

  /** A reliable client came back: replay what it has not acknowledged. */
  reattach(ws: WebSocket): void {
    clearTimeout(this.recoveryTimer);
    this.recoveryTimer = undefined;
    const previous = this.socket;
    this.attach(ws);
    previous?.terminate();
    for (const { frame } of this.unacked) ws.send(frame);
  }

  deliver(message: OutboundMessage): void {
    if (this.ended) return;
    if (this.kind === 'simple') {
      this.socket?.send(message.data, { binary: message.dataType === 'binary' });
      return;
    }
    let frame = messageFrame(message);
    if (this.kind === 'reliable') {
      const sequenceId = ++this.sequenceId;
      frame = `{"sequenceId":${sequenceId},${frame.slice(1)}`;
      this.unacked.push({ sequenceId, frame });
      this.unackedBytes += frame.length;
      if (this.unacked.length > MAX_UNACKED_MESSAGES || this.unackedBytes > MAX_UNACKED_BYTES) {
        this.close('Too many unacknowledged messages', Close.policy);
        return;
      }
    }
    this.socket?.send(frame);
  }

  /** Server-initiated close: JSON clients are told why first. */
  close(reason: string, code: number = Close.normal): void {
    if (this.ended) return;
    const ws = this.socket;
    this.log.debug(`Closing client ${this.id} (${code}): ${reason}`);
    this.end(reason);
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (this.kind !== 'simple') {
      ws.send(JSON.stringify({ type: 'system', event: 'disconnected', message: reason }));
    }
    ws.close(code, truncateReason(reason));
  }

  private attach(ws: WebSocket): void {
    this.socket = ws;
    ws.on('message', (data, isBinary) => {
      try {
        if (this.kind === 'simple') this.onSimpleFrame(toBuffer(data), isBinary);
        else this.onJsonFrame(data, isBinary);
      } catch (err) {
        if (err instanceof InvalidFrameError) {
          this.log.debug(`Client ${this.id} sent an invalid frame: ${err.message}`);
          this.close(`Invalid frame: ${err.message}`, Close.invalidData);
        } else {
          this.log.error(`Client ${this.id}: frame handling failed: ${errorText(err)}`);
          this.close('The emulator failed to handle a frame', Close.internalError);
        }
      }
    });
    ws.on('error', (err) => this.log.debug(`Client ${this.id} socket error: ${err.message}`));
    ws.on('close', (code, reason) => this.onSocketClose(ws, code, reason.toString('utf8')));
    if (this.kind !== 'simple') {
      ws.send(
        JSON.stringify({
          type: 'system',
          event: 'connected',
          userId: this.userId ?? null,
          connectionId: this.id,
          ...(this.reconnectionToken ? { reconnectionToken: this.reconnectionToken } : {}),
        }),
      );
    }
  }

  private onSocketClose(ws: WebSocket, code: number, reason: string): void {
    if (ws !== this.socket) return;
    this.socket = undefined;
    if (this.ended) return;
    // Only a dropped socket (no close frame) is worth waiting for; a closing client is gone.
    if (this.kind === 'reliable' && code === 1006 && !this.endpoint.closing) {
      this.log.debug(`Client ${this.id} dropped; kept ${RECOVERY_WINDOW_MS} ms for recovery`);
      this.recoveryTimer = setTimeout(
        () => this.end('The connection was not recovered in time'),
        RECOVERY_WINDOW_MS,
      ).unref();
      return;
    }
    this.log.debug(
      `Client ${this.id} closed the connection (${code}${reason ? `: ${reason}` : ''})`,
    );
    this.end(reason);
  }

  /** The logical connection ends: it leaves the hub and `disconnected` goes upstream. */
  private end(reason: string): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.recoveryTimer);
    this.unacked = [];
    this.unackedBytes = 0;
    this.hub.remove(this);
    this.endpoint.connections.delete(this);
    this.sendSystemEvent('disconnected', { reason });
  }

  // -------------------------------------------------------------------------------------------
  // Frames from the client

  private onSimpleFrame(body: Buffer, isBinary: boolean): void {
    if (this.sendToGroupMode) {
      const { group, noEcho } = this.sendToGroupMode;
      if (!isValidGroupName(group) || !hasPermission(this.roles, 'sendToGroup', group)) {
        this.log.warn(`Client ${this.id} may not send to group "${group}"; frame dropped`);
        return;
      }
      this.sendToGroup(group, isBinary ? 'binary' : 'text', body, noEcho);
      return;
    }
    const contentType = isBinary ? CONTENT_TYPES.binary : CONTENT_TYPES.text;
    void this.sendUserEvent('message', contentType, body).then((outcome) => {
      if (!outcome.ok) {
        this.log.warn(`Client ${this.id}: ${outcome.reason}; closing the connection`);
        this.close(outcome.reason, Close.internalError);
      } else if (outcome.reply) {
        this.deliver(outcome.reply);
      }
    });
  }

  private onJsonFrame(data: RawData, isBinary: boolean): void {
    if (isBinary) throw new InvalidFrameError(`binary frames are not part of ${this.subprotocol}`);
    let frame: unknown;
    try {
      frame = JSON.parse(toBuffer(data).toString('utf8'));
    } catch {
      throw new InvalidFrameError('the frame is not JSON');
    }
    if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
      throw new InvalidFrameError('the frame is not a JSON object');
    }
    const message = frame as Record<string, unknown>;
    const ackId = message.ackId;
    if (
      ackId !== undefined &&
      ackId !== null &&
      !(Number.isSafeInteger(ackId) && (ackId as number) >= 0)
    ) {
      throw new InvalidFrameError('"ackId" must be a non-negative integer');
    }
    const ack = typeof ackId === 'number' ? ackId : undefined;
    switch (message.type) {
      case 'ping':
        this.socket?.send('{"type":"pong"}');
        return;
      case 'sequenceAck': {
        const sequenceId = message.sequenceId;
        if (!Number.isSafeInteger(sequenceId)) {
          throw new InvalidFrameError('"sequenceId" must be an integer');
        }
        const first = this.unacked.findIndex((m) => m.sequenceId > (sequenceId as number));
        this.unacked = first === -1 ? [] : this.unacked.slice(first);
        this.unackedBytes = this.unacked.reduce((sum, m) => sum + m.frame.length, 0);
        return;
      }
      case 'joinGroup':
      case 'leaveGroup': {
        const group = groupOf(message);
        if (this.isDuplicate(ack)) return;
        if (!hasPermission(this.roles, 'joinLeaveGroup', group)) {
          return this.sendAck(ack, 'Forbidden', `No permission to join or leave group "${group}"`);
        }
        if (message.type === 'joinGroup') this.hub.join(this, group);
        else this.hub.leave(this, group);
        this.log.debug(
          `Client ${this.id} ${message.type === 'joinGroup' ? 'joined' : 'left'} "${group}"`,
        );
        return this.sendAck(ack);
      }
      case 'sendToGroup': {
        const group = groupOf(message);
        const payload = payloadOf(message);
        if (this.isDuplicate(ack)) return;
        if (!hasPermission(this.roles, 'sendToGroup', group)) {
          return this.sendAck(ack, 'Forbidden', `No permission to send to group "${group}"`);
        }
        this.sendToGroup(group, payload.dataType, payload.data, message.noEcho === true);
        return this.sendAck(ack);
      }
      case 'event': {
        const event = message.event;
        if (typeof event !== 'string' || !event) {
          throw new InvalidFrameError('"event" must be a non-empty string');
        }
        const payload = payloadOf(message);
        const metadata = metadataOf(message);
        if (this.isDuplicate(ack)) return;
        void this.sendUserEvent(
          event,
          CONTENT_TYPES[payload.dataType],
          payload.data,
          metadata,
        ).then((outcome) => {
          if (!outcome.ok) {
            this.log.warn(`Client ${this.id}: ${outcome.reason}`);
            return this.sendAck(ack, 'InternalServerError', outcome.reason);
          }
          if (outcome.reply) this.deliver(outcome.reply);
          this.sendAck(ack);
        });
        return;
      }
      default:
        if (typeof message.type !== 'string') throw new InvalidFrameError('"type" is missing');
        this.log.debug(
          `Client ${this.id} sent "${message.type}", which the emulator does not support`,
        );
        return this.sendAck(
          ack,
          'BadRequest',
          `"${message.type}" is not supported by the emulator`,
        );
    }
  }

  private sendToGroup(
    group: string,
    dataType: UserEventDataType,
    data: Buffer,
    noEcho: boolean,
  ): void {
    const message: OutboundMessage = {
      from: 'group',
      group,
      fromUserId: this.userId,
      dataType,
      data,
    };
    for (const member of this.hub.groupConnections(group)) {
      if (!(noEcho && member === this)) member.deliver(message);
    }
  }

  /** A repeated ackId that already succeeded is answered `Duplicate` and not done again. */
  private isDuplicate(ackId: number | undefined): boolean {
    if (ackId === undefined || !this.succeededAckIds.has(ackId)) return false;
    this.sendAck(ackId, 'Duplicate', `Message with ackId ${ackId} was already processed`);
    return true;
  }

  private sendAck(ackId: number | undefined, errorName?: string, errorMessage?: string): void {
    if (ackId === undefined || this.ended) return;
    if (!errorName) {
      this.succeededAckIds.add(ackId);
      // Clients number acks upward; a retry comes soon after the original.
      if (this.succeededAckIds.size > ACK_ID_MEMORY) {
        this.succeededAckIds.delete(this.succeededAckIds.values().next().value!);
      }
    }
    this.socket?.send(
      JSON.stringify(
        errorName
          ? {
              type: 'ack',
              ackId,
              success: false,
              error: { name: errorName, message: errorMessage },
            }
          : { type: 'ack', ackId, success: true },
      ),
    );
  }

  // -------------------------------------------------------------------------------------------
  // Upstream

  /** Upstream requests of one connection go one at a time, in order. */
  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    if (++this.queuedEvents > MAX_QUEUED_EVENTS) {
      this.close('Too many events waiting for the event handler', Close.policy);
    }
    const run = this.upstreamQueue.then(task);
    this.upstreamQueue = run.catch(() => undefined);
    void run.finally(() => this.queuedEvents--).catch(() => undefined);
    return run;
  }

  private upstreamEvent(
    kind: 'system' | 'user',
    eventName: string,
    contentType: string,
    body: Buffer,
    metadata?: Record<string, string>,
  ): UpstreamEvent {
    return {
      hub: this.hubName,
      connectionId: this.id,
      eventId: this.nextEventId++,
      kind,
      eventName,
      userId: this.userId,
      subprotocol: this.subprotocol,
      connectionState: this.connectionState,
      metadata,
      contentType,
      body,
    };
  }

  private sendSystemEvent(eventName: 'connected' | 'disconnected', body: object): void {
    const { upstream } = this.endpoint.context;
    const setting = upstream.findHandler(this.hubName, 'system', eventName);
    if (!setting) return;
    void this.enqueue(async () => {
      if (this.endpoint.closing) return;
      const event = this.upstreamEvent(
        'system',
        eventName,
        SYSTEM_CONTENT_TYPE,
        Buffer.from(JSON.stringify(body)),
      );
      try {
        const response = await upstream.deliver(setting, event);
        if (response.status < 200 || response.status > 299) {
          this.log.warn(`The ${eventName} event of ${this.id} was answered ${response.status}`);
        }
      } catch (err) {
        if (!this.endpoint.closing) this.log.error(errorText(err));
      }
    });
  }

  private sendUserEvent(
    eventName: string,
    contentType: string,
    body: Buffer,
    metadata?: Record<string, string>,
  ): Promise<EventOutcome> {
    const { upstream } = this.endpoint.context;
    return this.enqueue(async (): Promise<EventOutcome> => {
      const setting = upstream.findHandler(this.hubName, 'user', eventName);
      if (!setting) return { ok: false, reason: `No event handler for user event "${eventName}"` };
      let response: UpstreamResponse;
      try {
        response = await upstream.deliver(
          setting,
          this.upstreamEvent('user', eventName, contentType, body, metadata),
        );
      } catch (err) {
        return { ok: false, reason: errorText(err) };
      }
      if (response.status < 200 || response.status > 299) {
        return {
          ok: false,
          reason: `The event handler answered ${response.status} to "${eventName}"`,
        };
      }
      if (response.headers.has(CeHeaders.connectionState)) {
        this.connectionState = response.headers.get(CeHeaders.connectionState) || undefined;
      }
      return { ok: true, reply: this.replyMessage(response) };
    });
  }

  private replyMessage(response: UpstreamResponse): OutboundMessage | undefined {
    if (response.status === 204 || response.body.length === 0) return undefined;
    const type = mediaType(response.headers.get('content-type') ?? undefined);
    let dataType: UserEventDataType = 'binary';
    if (type === 'application/json' || type.endsWith('+json')) {
      dataType = 'json';
      try {
        JSON.parse(response.body.toString('utf8'));
      } catch {
        this.log.warn(
          `Client ${this.id}: the event handler's JSON reply is not JSON; sent as text`,
        );
        dataType = 'text';
      }
    } else if (type.startsWith('text/')) {
      dataType = 'text';
    }
    return { from: 'server', dataType, data: response.body };
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function groupOf(message: Record<string, unknown>): string {
  const group = message.group;
  if (typeof group !== 'string' || !isValidGroupName(group)) {
    throw new InvalidFrameError('"group" must be a group name of 1 to 1024 characters');
  }
  return group;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function payloadOf(message: Record<string, unknown>): {
  dataType: UserEventDataType;
  data: Buffer;
} {
  const data = message.data;
  switch (message.dataType ?? 'json') {
    case 'json':
      if (data === undefined) throw new InvalidFrameError('"data" is missing');
      return { dataType: 'json', data: Buffer.from(JSON.stringify(data)) };
    case 'text':
      if (typeof data !== 'string') throw new InvalidFrameError('text "data" must be a string');
      return { dataType: 'text', data: Buffer.from(data) };
    case 'binary':
      if (typeof data !== 'string' || !BASE64.test(data)) {
        throw new InvalidFrameError('binary "data" must be a base64 string');
      }
      return { dataType: 'binary', data: Buffer.from(data, 'base64') };
    default:
      throw new InvalidFrameError('"dataType" must be "json", "text" or "binary"');
  }
}

function metadataOf(message: Record<string, unknown>): Record<string, string> | undefined {
  const metadata = message.metadata;
  if (metadata === undefined || metadata === null) return undefined;
  if (
    typeof metadata !== 'object' ||
    Array.isArray(metadata) ||
    !Object.entries(metadata).every(
      ([k, v]) => /^[\x21-\x7e]+$/.test(k) && typeof v === 'string' && /^[\x20-\x7e]*$/.test(v),
    )
  ) {
    throw new InvalidFrameError('"metadata" must map names to ASCII strings');
  }
  return metadata as Record<string, string>;
}

/** Claims and connect-response lists as arrays of strings; `wrap` turns a scalar into a list. */
function stringList(value: unknown, wrap = false): string[] {
  if (Array.isArray(value)) return value.filter((v) => v !== null && v !== undefined).map(String);
  if (typeof value === 'string') return [value];
  if (wrap && value !== undefined && value !== null) return [String(value)];
  return [];
}

function groupEntries(entries: Array<[string, string]>): Record<string, string[]> {
  const result: Record<string, string[]> = {};
  for (const [key, value] of entries) (result[key] ??= []).push(value);
  return result;
}

/** Request headers with their original spelling, as the service forwards them. */
function headerPairs(req: IncomingMessage): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    pairs.push([req.rawHeaders[i]!, req.rawHeaders[i + 1]!]);
  }
  return pairs;
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

function safeDecode(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment);
  } catch {
    return undefined;
  }
}

/** A close reason is limited to 123 bytes. */
function truncateReason(reason: string): string {
  const bytes = Buffer.from(reason);
  return bytes.length <= 123
    ? reason
    : bytes
        .subarray(0, 120)
        .toString('utf8')
        .replace(/\uFFFD$/, '') + '…';
}

function reject(socket: Duplex, status: number, message = ''): void {
  if (socket.destroyed) return;
  const body = Buffer.from(message);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
      'Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\n' +
      `Content-Length: ${body.length}\r\n\r\n${message}`,
  );
}
