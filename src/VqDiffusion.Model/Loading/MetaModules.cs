using System.Reflection;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace VqDiffusion.Model.Loading;

/// <summary>
/// Gives a module built on the meta device real tensors, the way TorchSharp's own <c>Module.to</c> swaps
/// parameters (its <c>_toEpilog</c>): through the public property named like the parameter where the module has one
/// (Linear, LayerNorm, Conv2d, GroupNorm, Embedding), otherwise by re-registering it and setting the field of that
/// name (this project's modules, whose fields are named like the checkpoint keys). TorchSharp 0.107 has no
/// <c>to_empty</c>, and <c>Tensor.set_</c> refuses a storage on another device, hence the reflection.
/// </summary>
internal static class MetaModules
{
    private static readonly MethodInfo RegisterParameter = typeof(nn.Module).GetMethod(
        "ConditionallyRegisterParameter", BindingFlags.Instance | BindingFlags.NonPublic, [typeof(string), typeof(Parameter)])
        ?? throw new MissingMethodException("TorchSharp's Module.ConditionallyRegisterParameter(string, Parameter) is missing.");

    private static readonly MethodInfo RegisterBuffer = typeof(nn.Module).GetMethod(
        "ConditionallyRegisterBuffer", BindingFlags.Instance | BindingFlags.NonPublic, [typeof(string), typeof(Tensor), typeof(bool)])
        ?? throw new MissingMethodException("TorchSharp's Module.ConditionallyRegisterBuffer(string, Tensor, bool) is missing.");

    /// <summary>
    /// Replaces every meta parameter and buffer of <paramref name="root"/> by <paramref name="create"/>(state_dict key,
    /// meta tensor); throws if a meta tensor is left (a buffer that is not in the state_dict).
    /// </summary>
    public static void Materialize(nn.Module root, Func<string, Tensor, Tensor> create)
    {
        foreach (var (prefix, module) in root.named_modules().Prepend((string.Empty, root)).ToList())
        {
            string Key(string name) => prefix.Length == 0 ? name : prefix + "." + name;
            foreach (var (name, param) in module.named_parameters(recurse: false).ToList())
            {
                if (param.device_type != DeviceType.META)
                {
                    continue;
                }

                var replacement = new Parameter(create(Key(name), param), requires_grad: false);
                if (Property(module, name, typeof(Parameter)) is { } property)
                {
                    property.SetValue(module, replacement);
                }
                else
                {
                    RegisterParameter.Invoke(module, [name, replacement]);
                    Field(module, name)?.SetValue(module, replacement);
                }
            }

            foreach (var (name, buffer) in module.named_buffers(recurse: false).ToList())
            {
                if (buffer.device_type != DeviceType.META)
                {
                    continue;
                }

                Tensor replacement = create(Key(name), buffer);
                if (Property(module, name, replacement.GetType()) is { } property)
                {
                    property.SetValue(module, replacement);
                }
                else
                {
                    RegisterBuffer.Invoke(module, [name, replacement, true]);
                    Field(module, name)?.SetValue(module, replacement);
                }
            }
        }

        var left = root.named_parameters().Where(p => p.parameter.device_type == DeviceType.META).Select(p => p.name)
            .Concat(root.named_buffers().Where(b => b.buffer.device_type == DeviceType.META).Select(b => b.name)).ToList();
        if (left.Count > 0)
        {
            throw new InvalidOperationException($"{root.GetType().Name}: still on the meta device after loading: {string.Join(", ", left.Take(8))}.");
        }
    }

    private static PropertyInfo? Property(nn.Module module, string name, Type valueType)
    {
        PropertyInfo? property = module.GetType().GetProperty(name, BindingFlags.Instance | BindingFlags.Public);
        return property is { CanWrite: true } && property.PropertyType.IsAssignableFrom(valueType) ? property : null;
    }

    private static FieldInfo? Field(nn.Module module, string name)
    {
        for (Type? type = module.GetType(); type is not null && type != typeof(nn.Module); type = type.BaseType)
        {
            if (type.GetField(name, BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly) is { } field)
            {
                return field;
            }
        }

        return null;
    }
}
