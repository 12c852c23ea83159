/**
 * MQTT clients of Web PubSub: their CONNECT answers carry MQTT reason codes in a JSON body, and
 * their user properties travel as `mqtt-<name>` headers.
 */
import { HttpException } from '@nestjs/common';
import type { MqttUserProperty } from './web-pubsub.protocol.js';

/** MQTT 3.1.1 CONNACK return codes. */
export const Mqtt311Codes = {
  UnacceptableProtocolVersion: 1,
  IdentifierRejected: 2,
  ServerUnavailable: 3,
  BadUsernameOrPassword: 4,
  NotAuthorized: 5,
} as const;

/** MQTT 5 CONNACK reason codes a connect handler may answer with. */
export const Mqtt5Codes = {
  UnspecifiedError: 0x80,
  MalformedPacket: 0x81,
  ProtocolError: 0x82,
  ImplementationSpecificError: 0x83,
  UnsupportedProtocolVersion: 0x84,
  ClientIdentifierNotValid: 0x85,
  BadUsernameOrPassword: 0x86,
  NotAuthorized: 0x87,
  ServerUnavailable: 0x88,
  ServerBusy: 0x89,
  Banned: 0x8a,
  BadAuthenticationMethod: 0x8c,
  TopicNameInvalid: 0x90,
  PacketTooLarge: 0x95,
  QuotaExceeded: 0x97,
  PayloadFormatInvalid: 0x99,
  RetainNotSupported: 0x9a,
  QosNotSupported: 0x9b,
  UseAnotherServer: 0x9c,
  ServerMoved: 0x9d,
  ConnectionRateExceeded: 0x9f,
} as const;

const V311_STATUS: Record<number, number> = { 1: 400, 2: 400, 3: 503, 4: 401, 5: 401 };
const V5_STATUS: Record<number, number> = {
  0x86: 401,
  0x87: 401,
  0x81: 400,
  0x84: 400,
  0x85: 400,
  0x8c: 400,
  0x90: 400,
  0x95: 400,
  0x99: 400,
  0x9a: 400,
  0x9b: 400,
  0x83: 400,
  0x97: 429,
  0x9f: 429,
  0x8a: 403,
  0x80: 500,
  0x88: 500,
  0x89: 500,
  0x9c: 500,
  0x9d: 500,
};

/** The HTTP status the service expects with an MQTT reason code (the official SDKs' table). */
export function mqttCodeToStatus(code: number, protocolVersion: number): number {
  return (protocolVersion === 5 ? V5_STATUS : V311_STATUS)[code] ?? 500;
}

/**
 * The MQTT code for an HTTP rejection that named none: 400 → bad user name or password,
 * 401 and 403 → not authorized, anything else → server unavailable (3.1.1) or unspecified (5).
 */
export function statusToMqttCode(status: number, protocolVersion: number): number {
  if (protocolVersion === 5) {
    if (status === 400) return Mqtt5Codes.BadUsernameOrPassword;
    if (status === 401 || status === 403) return Mqtt5Codes.NotAuthorized;
    return Mqtt5Codes.UnspecifiedError;
  }
  if (status === 400) return Mqtt311Codes.BadUsernameOrPassword;
  if (status === 401 || status === 403) return Mqtt311Codes.NotAuthorized;
  return Mqtt311Codes.ServerUnavailable;
}

/**
 * Rejects an MQTT client's CONNECT with a reason code (and, for MQTT 5, a reason string and user
 * properties in the CONNACK). Its HTTP status follows the code.
 *
 *   throw new MqttConnectException(Mqtt5Codes.Banned, 'banned until tomorrow');
 */
export class MqttConnectException extends HttpException {
  constructor(
    readonly code: number,
    readonly reason?: string,
    readonly userProperties?: MqttUserProperty[],
  ) {
    // Codes from 0x80 are MQTT 5's. The answer translates the code to the client's version.
    super(
      reason ?? `MQTT connect refused with code ${code}`,
      mqttCodeToStatus(code, code >= 0x80 ? 5 : 4),
    );
  }
}

/** The nearest MQTT 3.1.1 return code for an MQTT 5 reason code (3.1.1 has only five). */
const V5_TO_V311: Record<number, number> = {
  0x84: Mqtt311Codes.UnacceptableProtocolVersion,
  0x85: Mqtt311Codes.IdentifierRejected,
  0x86: Mqtt311Codes.BadUsernameOrPassword,
  0x8c: Mqtt311Codes.BadUsernameOrPassword,
  0x87: Mqtt311Codes.NotAuthorized,
  0x8a: Mqtt311Codes.NotAuthorized,
};
const V311_TO_V5: Record<number, number> = {
  1: Mqtt5Codes.UnsupportedProtocolVersion,
  2: Mqtt5Codes.ClientIdentifierNotValid,
  3: Mqtt5Codes.ServerUnavailable,
  4: Mqtt5Codes.BadUsernameOrPassword,
  5: Mqtt5Codes.NotAuthorized,
};

/**
 * A reason code in the client's own MQTT version: a code of the other version would be read as
 * "unspecified error" (or refused) by the client.
 */
export function mqttCodeForVersion(code: number, protocolVersion: number): number {
  const isV5Code = code >= 0x80;
  if (protocolVersion === 5)
    return isV5Code ? code : (V311_TO_V5[code] ?? Mqtt5Codes.UnspecifiedError);
  return isV5Code ? (V5_TO_V311[code] ?? Mqtt311Codes.ServerUnavailable) : code;
}

/** The body the service reads from a failed MQTT connect. */
export function mqttConnectErrorBody(
  code: number,
  reason: string | undefined,
  userProperties?: MqttUserProperty[],
): string {
  return JSON.stringify({ mqtt: { code, reason, userProperties } });
}
