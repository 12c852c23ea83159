export { WebPubSubModule } from './web-pubsub.module.js';
export type { WebPubSubModuleOptions, WebPubSubModuleExtras } from './web-pubsub.options.js';
export { MODULE_OPTIONS_TOKEN as WEB_PUBSUB_MODULE_OPTIONS } from './web-pubsub.options.js';
export {
  WebPubSubHub,
  OnConnect,
  OnConnected,
  OnDisconnected,
  OnUserEvent,
  OnGroupJoined,
  OnGroupLeft,
  EventData,
  EventContext,
  InjectHub,
  getHubToken,
} from './web-pubsub.decorators.js';
export {
  WebPubSubContext,
  isWebPubSubContext,
  getWebPubSubContext,
  getWebPubSubEventData,
} from './web-pubsub.context.js';
export { EntraAuthError, type EntraAuthOptions } from './web-pubsub.entra.js';
export {
  MqttConnectException,
  Mqtt311Codes,
  Mqtt5Codes,
  mqttCodeToStatus,
  statusToMqttCode,
} from './web-pubsub.mqtt.js';
export { WebPubSubConfigurationError } from './web-pubsub.errors.js';
export { WEB_PUBSUB_CONTEXT_TYPE } from './web-pubsub.constants.js';
export {
  WebPubSubReply,
  computeSignature,
  signatureHeader,
  parseConnectionString,
  encodeConnectionState,
  decodeConnectionState,
  type ConnectRequest,
  type ConnectResponse,
  type DisconnectedRequest,
  type GroupEventRequest,
  type ConnectionStates,
  type ClientCertificate,
  type MqttConnectProperties,
  type MqttUserProperty,
  type ReplyOptions,
  type StringArrayMap,
  type UserEventDataType,
  type WebPubSubEventKind,
} from './web-pubsub.protocol.js';
// The official client, re-exported so users can type their injected hubs without another import.
export { WebPubSubServiceClient, AzureKeyCredential } from '@azure/web-pubsub';
