/** MQTT clients as the service presents them: connect bodies, reason codes, user properties. */
import { Module, UnauthorizedException } from '@nestjs/common';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  EventContext,
  EventData,
  Mqtt311Codes,
  Mqtt5Codes,
  MqttConnectException,
  OnConnect,
  OnDisconnected,
  OnUserEvent,
  WebPubSubHub,
  WebPubSubModule,
  WebPubSubReply,
  mqttCodeToStatus,
  statusToMqttCode,
  type ConnectRequest,
  type DisconnectedRequest,
  type WebPubSubContext,
} from 'nestjs-web-pubsub';
import {
  ADAPTERS,
  CONNECTION_STRING,
  connectBody,
  sendEvent,
  startApp,
  type RunningApp,
} from './upstream-helpers.js';
import { WebPubSubTestClient } from 'nestjs-web-pubsub/testing';

const seen: Array<{ data: unknown; context: WebPubSubContext }> = [];

@WebPubSubHub('iot')
class DevicesHub {
  @OnConnect()
  connect(@EventData() request: ConnectRequest, @EventContext() context: WebPubSubContext) {
    seen.push({ data: request, context });
    switch (request.mqtt?.username) {
      case 'banned':
        throw new MqttConnectException(Mqtt5Codes.Banned, 'banned until tomorrow', [
          { name: 'retry-after', value: '86400' },
        ]);
      case 'old-client':
        throw new MqttConnectException(Mqtt311Codes.IdentifierRejected);
      case 'stranger':
        throw new UnauthorizedException('who are you?');
      case 'crash':
        throw new Error('boom');
      case 'v5-code':
        throw new MqttConnectException(Mqtt5Codes.NotAuthorized, 'not you');
    }
    return { userId: request.mqtt?.username ?? undefined };
  }

  @OnUserEvent('telemetry')
  telemetry(@EventData() data: unknown, @EventContext() context: WebPubSubContext) {
    seen.push({ data, context });
    return WebPubSubReply.json(
      { ok: true },
      {
        mqttUserProperties: [
          { name: 'Stored-As', value: 'raw' },
          { name: 'Stored-As', value: 'json' },
        ],
      },
    );
  }

  @OnUserEvent('unicode')
  unicode() {
    return WebPubSubReply.text('x', { mqttUserProperties: [{ name: 'unit', value: '€' }] });
  }

  @OnDisconnected()
  disconnected(
    @EventData() request: DisconnectedRequest,
    @EventContext() context: WebPubSubContext,
  ) {
    seen.push({ data: request, context });
  }
}

@Module({
  imports: [WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING })],
  providers: [DevicesHub],
})
class MqttModule {}

const mqttHeaders = { 'ce-physicalConnectionId': 'phys-1', 'ce-sessionId': 'sess-1' };
const mqttConnect = (protocolVersion: 4 | 5, username: string) =>
  connectBody({
    mqtt: {
      protocolVersion,
      username,
      password: 'cGFzcw==',
      userProperties: [{ name: 'a', value: 'b' }],
    },
  });

describe('pure MQTT code mapping', () => {
  it('follows the official SDKs’ status table', () => {
    expect(mqttCodeToStatus(Mqtt311Codes.ServerUnavailable, 4)).toBe(503);
    expect(mqttCodeToStatus(Mqtt311Codes.NotAuthorized, 4)).toBe(401);
    expect(mqttCodeToStatus(Mqtt5Codes.Banned, 5)).toBe(403);
    expect(mqttCodeToStatus(Mqtt5Codes.QuotaExceeded, 5)).toBe(429);
    expect(mqttCodeToStatus(0x42, 5)).toBe(500);
    expect(statusToMqttCode(400, 4)).toBe(4);
    expect(statusToMqttCode(401, 4)).toBe(5);
    expect(statusToMqttCode(500, 4)).toBe(3);
    expect(statusToMqttCode(400, 5)).toBe(0x86);
    expect(statusToMqttCode(401, 5)).toBe(0x87);
    expect(statusToMqttCode(503, 5)).toBe(0x80);
  });
});

describe.each(ADAPTERS)('MQTT clients over %s', (adapter) => {
  let running: RunningApp;
  beforeAll(async () => {
    running = await startApp(MqttModule, { adapter });
  });
  afterAll(() => running.close());
  beforeEach(() => {
    seen.length = 0;
  });

  const connect = (protocolVersion: 4 | 5, username: string) =>
    sendEvent(
      running.url,
      { hub: 'iot', headers: { 'ce-physicalConnectionId': 'phys-1' } },
      mqttConnect(protocolVersion, username),
    );

  it('exposes the mqtt block of connect and marks the context as MQTT', async () => {
    const res = await connect(5, 'sensor-1');
    expect(res.json()).toEqual({ userId: 'sensor-1' });
    const { data, context } = seen[0]!;
    expect((data as ConnectRequest).mqtt).toEqual({
      protocolVersion: 5,
      username: 'sensor-1',
      password: 'cGFzcw==',
      userProperties: [{ name: 'a', value: 'b' }],
    });
    expect(context.clientProtocol).toBe('mqtt');
    expect(context.mqtt?.physicalConnectionId).toBe('phys-1');
  });

  it('rejects with the reason code, reason and user properties of an MqttConnectException', async () => {
    const res = await connect(5, 'banned');
    expect(res.status).toBe(403);
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(res.json()).toEqual({
      mqtt: {
        code: 0x8a,
        reason: 'banned until tomorrow',
        userProperties: [{ name: 'retry-after', value: '86400' }],
      },
    });
    const old = await connect(4, 'old-client');
    expect(old.status).toBe(400);
    expect(old.json().mqtt.code).toBe(2);
  });

  it.each([
    [4, 5],
    [5, 0x87],
  ] as const)(
    'maps an UnauthorizedException to the default code of MQTT version %i',
    async (version, code) => {
      const res = await connect(version, 'stranger');
      expect(res.status).toBe(401);
      expect(res.json()).toEqual({ mqtt: { code, reason: 'who are you?' } });
    },
  );

  it('translates an MQTT 5 code for an MQTT 3.1.1 client', async () => {
    const res = await connect(4, 'v5-code');
    expect(res.status).toBe(401);
    expect(res.json()).toEqual({ mqtt: { code: Mqtt311Codes.NotAuthorized, reason: 'not you' } });
    expect((await connect(5, 'v5-code')).json().mqtt.code).toBe(Mqtt5Codes.NotAuthorized);
  });

  it('refuses user properties that cannot travel in a header with the module’s own 500', async () => {
    const res = await sendEvent(running.url, {
      hub: 'iot',
      event: 'unicode',
      subprotocol: 'mqtt',
      headers: mqttHeaders,
    });
    expect(res.status).toBe(500);
    expect(res.json()).toEqual({
      statusCode: 500,
      message: 'Internal server error',
      error: 'Internal Server Error',
    });
  });

  it('maps an unexpected error to 500 with the server-error code, without details', async () => {
    const res = await connect(4, 'crash');
    expect(res.status).toBe(500);
    expect(res.json()).toEqual({ mqtt: { code: 3, reason: 'Internal server error' } });
    expect((await connect(5, 'crash')).json().mqtt.code).toBe(0x80);
  });

  it('exposes user properties of user events and sends those of the reply', async () => {
    const res = await sendEvent(
      running.url,
      {
        hub: 'iot',
        event: 'telemetry',
        subprotocol: 'mqtt',
        contentType: 'application/json',
        headers: { ...mqttHeaders, 'mqtt-unit': 'celsius', 'mqtt-sensor': 'kitchen' },
      },
      '{"t":21.5}',
    );
    expect(res.json()).toEqual({ ok: true });
    expect(res.headers.get('mqtt-stored-as')).toBe('raw, json');
    const { data, context } = seen[0]!;
    expect(data).toEqual({ t: 21.5 });
    expect(context.clientProtocol).toBe('mqtt');
    expect(context.mqtt).toEqual({
      physicalConnectionId: 'phys-1',
      sessionId: 'sess-1',
      userProperties: [
        { name: 'unit', value: 'celsius' },
        { name: 'sensor', value: 'kitchen' },
      ],
    });
  });

  it('exposes initiatedByClient and the DISCONNECT packet', async () => {
    const body = {
      reason: 'client disconnected',
      mqtt: {
        initiatedByClient: true,
        disconnectPacket: { code: 0, userProperties: [{ name: 'x', value: 'y' }] },
      },
    };
    const res = await sendEvent(
      running.url,
      { hub: 'iot', event: 'disconnected', subprotocol: 'mqtt', headers: mqttHeaders },
      body,
    );
    expect(res.status).toBe(204);
    expect(seen[0]!.data).toEqual(body);
    expect(seen[0]!.context.clientProtocol).toBe('mqtt');
  });

  it('treats a WebSocket client as such', async () => {
    await sendEvent(
      running.url,
      { hub: 'iot', event: 'telemetry', contentType: 'application/json' },
      '1',
    );
    expect(seen[0]!.context.clientProtocol).toBe('default');
    expect(seen[0]!.context.mqtt).toBeUndefined();
  });

  it('can be driven by the testing kit as an MQTT client', async () => {
    const device = new WebPubSubTestClient(running.url, {
      hub: 'iot',
      connectionString: CONNECTION_STRING,
      mqtt: { protocolVersion: 5, username: 'sensor-9', password: 'secret' },
    });
    expect((await device.connect()).data).toEqual({ userId: 'sensor-9' });
    expect((seen[0]!.data as ConnectRequest).mqtt?.password).toBe(
      Buffer.from('secret').toString('base64'),
    );
    const reply = await device.event(
      'telemetry',
      { t: 1 },
      {
        mqttUserProperties: [{ name: 'unit', value: 'celsius' }],
      },
    );
    expect(reply.headers['mqtt-stored-as']).toBe('raw, json');
    expect(seen[1]!.context.clientProtocol).toBe('mqtt');
    expect(seen[1]!.context.mqtt?.userProperties).toEqual([{ name: 'unit', value: 'celsius' }]);

    const banned = new WebPubSubTestClient(running.url, {
      hub: 'iot',
      connectionString: CONNECTION_STRING,
      mqtt: { username: 'banned' },
    });
    const refused = await banned.connect();
    expect([refused.status, (refused.data as { mqtt: { code: number } }).mqtt.code]).toEqual([
      403,
      Mqtt5Codes.Banned,
    ]);
  });
});
