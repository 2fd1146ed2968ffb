/**
 * What `ViTModel` needs of tfjs at run time: tfjs itself and the model's tfjs modules. model.ts imports this
 * module only for models that run on tfjs (`loadTfjsParts`), so that an inference-only model on the onnx
 * engine, and a process that only classifies with one, never loads tfjs.
 *
 * @module
 */
export * as tf from "@tensorflow/tfjs";
export { dropPathRates } from "./block.ts";
export { crossEntropy, softTargetCrossEntropy } from "./loss.ts";
export { VisionTransformer } from "./vision_transformer.ts";
